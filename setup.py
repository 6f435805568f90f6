"""FinMeta: an open benchmark suite for data-driven financial reinforcement learning."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

# Vendor libraries for live downloads. Tests mock them at their library call, so `dev` needs them.
SOURCES = [
    "yfinance>=0.2.40",
    "akshare>=1.14",
    "tushare>=1.4",
    "baostock>=0.8.9",
    "ccxt>=4.0",
    # the trade stage's Alpaca broker (trade/alpaca_broker.py); ccxt above is also its ccxt broker
    "alpaca-py>=0.30",
]

DEV = SOURCES + [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "empyrical-reloaded>=0.5.10",
    "nbmake>=1.5",
    "ipykernel>=6",
]

setup(
    name="finmeta",
    version="0.1.0",
    description="Three-layer benchmark suite for data-driven financial reinforcement learning",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["finmeta", "finmeta.*", "data_processors", "data_processors.*",
                                    "meta", "meta.*", "agents", "agents.*", "benchmarks", "benchmarks.*",
                                    "trade", "trade.*"]),
    package_data={
        "data_processors": ["params/*.json"],
        "benchmarks": ["configs/*.yaml", "configs/*.json"],
    },
    install_requires=[
        "numpy>=1.26",
        "pandas>=2.1",
        "pyarrow>=14",
        "scipy>=1.11",
        "gymnasium>=1.0",
        "exchange-calendars>=4.5",
        "stockstats>=0.6",
        "ta-lib>=0.6",
        "nltk>=3.9",
        "vaderSentiment>=3.3",
        "typer>=0.12",
        "rich>=13",
        "pyyaml>=6",
        "matplotlib>=3.8",
        # torch: install with `pip install torch==2.13.0 ...` (see README) to get the CPU build.
        "torch>=2.2",
        "stable-baselines3>=2.3",
        "sb3-contrib>=2.3",
        "quantstats>=0.0.62",
        "pyportfolioopt>=1.5",
        # benchmarks/stats.py: stationary-bootstrap block length, Hansen SPA (rliable is not used:
        # it pins arch < 8 and its interval estimates fail on arch 8)
        "arch>=8.0",
        # benchmarks/spec.py: the typed run spec (config validation)
        "pydantic>=2.5",
        "tqdm>=4.66",
    ],
    extras_require={
        "sources": SOURCES,
        "dev": DEV,
        "distributed": ["ray[default]>=2.9"],
        "tune": ["optuna>=3.5"],
        "tensorboard": ["tensorboard>=2.14"],
        # everything CI tests: dev + Ray + Optuna (the FinRL/ElegantRL peers install with --no-deps:
        # see benchmarks/peers/install_peers.sh)
        "all": DEV + ["ray[default]>=2.9", "optuna>=3.5", "tensorboard>=2.14"],
    },
    entry_points={"console_scripts": ["finmeta=finmeta.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Office/Business :: Financial :: Investment",
        "Intended Audience :: Science/Research",
    ],
)
