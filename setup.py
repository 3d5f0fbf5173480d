"""Install clipreid_plugin: ``pip install -e .`` (extras: ``[dev]`` test suite, ``[plots]`` charts,
``[faiss]`` indexed gallery search, ``[onnx]`` export checks, ``[tensorboard]``)."""

from setuptools import find_packages, setup

setup(
    name="clipreid_plugin",
    version="0.1.0",
    description="Person and vehicle re-identification toolkit with CLIP-ReID as a plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["clipreid_plugin", "clipreid_plugin.*"]),
    package_data={"clipreid_plugin": ["plugins/clipreid/model_configs/*.json"]},
    # Plugins are found through this entry-point group; the built-in CLIP-ReID plugin registers
    # itself here exactly as a third-party package would.
    entry_points={"clipreid_plugin.plugins": ["clipreid = clipreid_plugin.plugins.clipreid"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "open_clip_torch>=2.24",
        "tabulate",
        "termcolor",
    ],
    extras_require={
        "dev": ["pytest>=7"],
        "onnx": ["onnx", "onnxruntime"],
        "tensorboard": ["tensorboard"],
        "plots": ["matplotlib>=3.5"],  # training curves, benchmark charts
        "faiss": ["faiss-cpu>=1.7.3"],  # indexed gallery search (faiss-gpu works too)
    },
)
