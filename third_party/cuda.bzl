"""cuda_library: nvcc compiles each .cu to an object, the objects feed a cc_library.

Only built with --config=cuda (which sets --define=cuda=1); otherwise the
target is incompatible and `bazel build //...` / `bazel test //...` skip it.

The nvcc step is a small Starlark rule (not a genrule) so that it sees the
headers of its `deps` (their CcInfo), e.g. ops/attention.h from //ops:cpu, and
passes their include paths to nvcc. Headers of the @cuda repository itself are
not declared as inputs: nvcc finds them in /usr/local/cuda/include on its own,
and symlinking ~1750 files into every sandbox is slow.

Flags (checked with nvcc 13.0 + g++ 12.2): -std=c++20 works. No --use_fast_math:
it swaps expf/logf/sinf/tanhf and division for approximate versions and flushes
denormals, which breaks the 1e-5 agreement with the CPU ops; a kernel that wants
an intrinsic (__expf) writes it explicitly.
"""

CUDA_ONLY = select({
    "//:cuda": [],
    "//conditions:default": ["@platforms//:incompatible"],
})

NVCC = "/usr/local/cuda/bin/nvcc"

NVCC_FLAGS = [
    "-std=c++20",
    "-O3",
    "-lineinfo",
    "-Xcompiler=-fPIC",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
]

def _nvcc_objects_impl(ctx):
    contexts = [d[CcInfo].compilation_context for d in ctx.attr.deps if CcInfo in d]
    headers = [
        h
        for h in depset(ctx.files.hdrs, transitive = [c.headers for c in contexts]).to_list()
        if h.owner == None or h.owner.workspace_name != "cuda"
    ]
    include_flags = ["-I.", "-I" + ctx.bin_dir.path, "-I" + ctx.genfiles_dir.path]
    for c in contexts:
        for d in c.includes.to_list() + c.quote_includes.to_list():
            include_flags.append("-I" + d)
        for d in c.system_includes.to_list():
            include_flags += ["-isystem", d]
        for d in c.defines.to_list():
            include_flags.append("-D" + d)

    objects = []
    for src in ctx.files.srcs:
        obj = ctx.actions.declare_file(
            ctx.label.name + "/" + src.basename[:-len(".cu")] + ".o",
        )
        args = ctx.actions.args()
        args.add_all(NVCC_FLAGS + ctx.attr.copts + include_flags)
        args.add("-c", src)
        args.add("-o", obj)
        ctx.actions.run(
            executable = NVCC,
            arguments = [args],
            inputs = depset([src] + headers),
            outputs = [obj],
            mnemonic = "Nvcc",
            progress_message = "nvcc " + src.short_path,
            use_default_shell_env = True,  # nvcc needs PATH to find g++
        )
        objects.append(obj)
    return [DefaultInfo(files = depset(objects))]

_nvcc_objects = rule(
    implementation = _nvcc_objects_impl,
    attrs = {
        "srcs": attr.label_list(allow_files = [".cu"]),
        "hdrs": attr.label_list(allow_files = [".h", ".cuh"]),
        "deps": attr.label_list(providers = [CcInfo]),
        "copts": attr.string_list(),
    },
)

def cuda_library(name, srcs, hdrs = [], private_hdrs = [], deps = [], copts = [], **kwargs):
    """A cc_library whose srcs are .cu files compiled by nvcc.

    hdrs: the headers this library exports; host-only declarations that g++
    can compile too (no __global__/__device__ code). private_hdrs: headers only
    the .cu files include (device helpers); nvcc sees them, dependents do not.
    deps: cc_library targets whose headers the .cu files include (their headers
    are nvcc inputs too). copts: extra nvcc flags.
    """
    _nvcc_objects(
        name = name + "_nvcc",
        srcs = srcs,
        hdrs = hdrs + private_hdrs,
        deps = deps,
        copts = copts,
        target_compatible_with = CUDA_ONLY,
        visibility = ["//visibility:private"],
    )
    native.cc_library(
        name = name,
        srcs = [":" + name + "_nvcc"],
        hdrs = hdrs,
        deps = deps + ["@cuda//:cudart"],
        target_compatible_with = CUDA_ONLY,
        **kwargs
    )

def cuda_test(name, srcs, deps = [], tags = [], **kwargs):
    """A cc_test of CUDA code: built only with --config=cuda, never cached.

    Tagged `external` so Bazel never caches a result (a pass on a machine
    without a GPU is a skip, not evidence) and `gpu` for filtering
    (--test_tag_filters=gpu). The test itself must GTEST_SKIP when
    ut::cuda::CudaAvailable() is false. linkstatic: the project's own
    libraries are linked into the binary (no Bazel _solib tree), so the binary
    can be carried to a GPU machine with only system .so files beside it
    (tools/gpu/pack.sh).
    """
    native.cc_test(
        name = name,
        srcs = srcs,
        deps = deps,
        linkstatic = True,
        tags = tags + ["external", "gpu"],
        target_compatible_with = CUDA_ONLY,
        **kwargs
    )
