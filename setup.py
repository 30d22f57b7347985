"""simclr_distill: knowledge distillation of SimCLR-S2 teachers, reproduced and extended."""

import pathlib
import re

from setuptools import find_packages, setup

here = pathlib.Path(__file__).parent
version = re.search(r'__version__ = "([^"]+)"', (here / "simclr_distill" / "__init__.py").read_text())[1]

STAGES = ("prepare", "pretrain", "finetune", "label", "distill", "baseline", "study", "results",
          "dashboard")

setup(
    name="simclr_distill",
    version=version,
    description="Stage 3 of SimCLR-S2: distilling fine-tuned teachers into Keras students for "
                "irrigated-land detection in Sentinel-2 (BigEarthNet-S2)",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["simclr_distill", "simclr_distill.*", "stages"]),
    package_data={"simclr_distill.dashboard": ["report.js"]},
    install_requires=[
        "tensorflow>=2.20,<2.22",  # Keras 3 era; tested with 2.21
        "keras>=3.12",  # keras.distillation (the reference Distiller) appeared in 3.12
        "tensorflow-datasets>=4.9",
        "numpy>=1.26",
        "scipy>=1.11",
        "pandas>=2.1",
        "pyarrow>=14",
        "plotly>=5.18",
        "dash>=2.16",  # the results dashboard (plotly's web-app framework)
        "absl-py>=2.0",
        "scikit-learn>=1.3",  # the embedded digits demo data and metric cross-checks
        "tifffile>=2023.1",  # BigEarthNet's GeoTIFF bands
        "threadpoolctl>=3.1",  # one BLAS thread per conversion worker
    ],
    # bigearthnet-common ships six real BigEarthNet-S2 patches the tests convert.
    # selenium drives Debian's chromium in the dashboard tests; nbclient/ipykernel run the
    # notebooks headlessly.
    extras_require={"dev": ["pytest>=8", "pytest-timeout>=2.2", "bigearthnet-common==2.8.0",
                            "selenium>=4.15", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29"]},
    entry_points={"console_scripts": [
        f"simclr-distill-{name}=stages.{name}:run" for name in STAGES]},
)
