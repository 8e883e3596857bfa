// SPDX-License-Identifier: BSD-3-Clause
// The ganops._C module: an empty Python module (py_limited_api) whose import registers the ganops:: ops.
// Each op adds its schemas with TORCH_LIBRARY_FRAGMENT(ganops, m) in csrc/cpu/<op>.cpp, beside its CPU kernels
// (TORCH_LIBRARY_IMPL(ganops, CPU, m)); csrc/cuda/<op>_cuda.cpp adds its CUDA kernels.
#include <Python.h>
#include <torch/library.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(ganops, m) {}
