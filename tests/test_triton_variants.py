"""tools/triton_variants.py: the specialisation key that decides how many Triton binaries a GPU compiles."""
import torch

from tools.triton_variants import specialisation_key


def _kernel(x_ptr, n, scale, BLOCK: "tl.constexpr"):  # the shape of a @triton.jit kernel's signature
    pass


def _key(x, n, scale=1.0, block=64):
    return specialisation_key(_kernel, ["x_ptr", "n", "scale", "BLOCK"], (x, n, scale), {"BLOCK": block})


def test_key_follows_what_triton_specialises_on():
    big = torch.zeros(64)
    x, y = big[:32], big[1:33]  # 16-byte aligned, then 4 bytes off
    assert _key(x, 48) == _key(x, 32) == _key(big[16:48], 64)  # same dtype, alignment, n % 16 == 0
    assert _key(x, 48) != _key(y, 48)  # alignment
    assert _key(x, 48) != _key(x, 47) != _key(x, 1)  # % 16, == 1
    assert _key(x, 47) == _key(x, 45)
    assert _key(x, 48) != _key(x, 2**31 + 16)  # 64-bit int
    assert _key(x, 48) != _key(x.double(), 48)  # dtype
    assert _key(x, 48, scale=0.5) == _key(x, 48, scale=3.0)  # floats: one type
    assert _key(x, 48, block=64) != _key(x, 48, block=128)  # constexpr values
