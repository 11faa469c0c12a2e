"""Shared fixtures: tiny synthetic shower files built in tmp_path."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small models: threads only add noise and overhead)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """caloforge's cache (the int8 choices) in a folder of the test session, not ~/.cache."""
    monkeypatch.setenv("CALOFORGE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
