"""One distribution: `subnet` (python/subnet) and `subnet_kernels` (+ its C++/CUDA extension).

The extension `subnet_kernels._C` is built from csrc/: the C++ CPU sources always, the CUDA
sources when nvcc and a CUDA build of torch are present (or FORCE_CUDA=1). Build with
`pip install --no-build-isolation -e .` so that the pinned torch is the one compiled against.
"""
import glob
import os

from setuptools import find_packages, setup


def _extension():
    # torch guesses CUDA_HOME from the nvcc on PATH; a wrapper script in /usr/local/bin makes
    # that /usr/local, which has no libcudart. Point it at the toolkit unless the user did.
    if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and os.path.exists(
            "/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # metadata-only builds
        return [], {}
    cpu_sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if not cpu_sources:
        return [], {}
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    want_cuda = os.environ.get("FORCE_CUDA") == "1" or (
        torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    )
    if os.environ.get("SUBNET_NO_CUDA") == "1":
        want_cuda = False
    extra = {"cxx": ["-O3", "-std=c++17", "-fopenmp"]}
    # -lstdc++: link the shared libstdc++ that torch uses, even where the compiler links a
    # static copy by default (the H200 machine's g++ does: that private copy crashed while
    # formatting an error message, benchmarks/results/gpu-cuda-nvidia-h200-crash-backtrace.txt).
    link = ["-fopenmp", "-lstdc++"]
    if want_cuda and cuda_sources:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        extra["nvcc"] = ["-O3", "-std=c++17"]
        ext = cpp_extension.CUDAExtension(
            "subnet_kernels._C", cpu_sources + cuda_sources,
            define_macros=[("SUBNET_WITH_CUDA", "1")], extra_compile_args=extra,
            extra_link_args=link,
        )
    else:
        ext = cpp_extension.CppExtension(
            "subnet_kernels._C", cpu_sources, extra_compile_args=extra,
            extra_link_args=link,
        )
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extension()

setup(
    name="subnet",
    version="0.1.0",
    description="Extract small, fast, task-specific subnetworks from pretrained audio encoders",
    python_requires=">=3.10",
    # what `import subnet` and the `subnet` command need; requirements.txt pins the tested stack
    install_requires=["torch>=2.4", "torchaudio>=2.4", "numpy>=1.24", "transformers>=4.46", "safetensors>=0.4",
                      "soundfile>=0.12", "tqdm>=4.66", "matplotlib>=3.8", "onnx>=1.16", "onnxruntime>=1.18"],
    package_dir={"subnet": "python/subnet", "subnet_kernels": "subnet_kernels"},
    packages=["subnet"] + ["subnet." + p for p in find_packages("python/subnet")]
    + (["subnet_kernels"] + ["subnet_kernels." + p for p in find_packages("subnet_kernels")]
       if os.path.isdir("subnet_kernels") else []),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["subnet=subnet.cli:main"]},
)
