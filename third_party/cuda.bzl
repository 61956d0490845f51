"""cuda_library: nvcc in a genrule per .cu file, the objects fed to a cc_library.

Only built with --config=cuda (which sets --define=cuda=1); otherwise the
target is incompatible and `bazel build //...` / `bazel test //...` skip it.
"""

CUDA_ONLY = select({
    "//:cuda": [],
    "//conditions:default": ["@platforms//:incompatible"],
})

NVCC_FLAGS = " ".join([
    "-std=c++20",
    "-O3",
    "--use_fast_math",
    "-Xcompiler -fPIC",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-I.",
])

def cuda_library(name, srcs, hdrs = [], deps = [], **kwargs):
    objs = []
    for src in srcs:
        obj = name + "_" + src.replace("/", "_").replace(".cu", ".o")
        native.genrule(
            name = obj + "_nvcc",
            srcs = [src] + hdrs + native.glob(["**/*.h", "**/*.cuh"], allow_empty = True),
            outs = [obj],
            cmd = "/usr/local/cuda/bin/nvcc " + NVCC_FLAGS + " -I$(GENDIR) -c $(location " + src + ") -o $@",
            target_compatible_with = CUDA_ONLY,
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["@cuda//:cudart"],
        target_compatible_with = CUDA_ONLY,
        **kwargs
    )
