from setuptools import find_packages, setup

setup(
    name="meshinv",
    version="0.1.0",
    description="Monocular 3D object reconstruction with GAN inversion (MeshInversion, ECCV 2022)",
    packages=find_packages(include=["meshinv", "meshinv.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch",
        "torchvision",
        "numpy",
        "pyyaml",
        "tensorboard",
        "pillow",
        "scipy",
        "tqdm",
    ],
    extras_require={
        "fid": ["pytorch-fid"],
        "dev": ["pytest", "trimesh", "matplotlib"],
    },
)
