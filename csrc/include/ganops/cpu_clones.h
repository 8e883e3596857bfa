// SPDX-License-Identifier: BSD-3-Clause
// GANOPS_CLONES: build a CPU row loop for AVX2 and a baseline target, the version chosen at load time (GCC
// target_clones; nothing elsewhere). For the ATen-free row-loop files (csrc/cpu/*_rows.cpp).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GANOPS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define GANOPS_CLONES
#endif
