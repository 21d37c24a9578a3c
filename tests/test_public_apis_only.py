"""The product uses BentoML's public API only: private modules change without notice."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT

PRODUCT_DIRS = ("components", "flows", "services", "benchmarks")
PRIVATE = re.compile(r"bentoml\._internal|\b_bentoml_impl\b|\b_bentoml_sdk\b")


def test_no_bentoml_internals_anywhere_in_the_product() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for folder in PRODUCT_DIRS
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if PRIVATE.search(line)
    ]
    assert not offenders, "private BentoML modules used:\n" + "\n".join(offenders)


def test_the_check_would_catch_an_internal_import() -> None:
    assert PRIVATE.search("from bentoml._internal.models.model import ModelStore")
    assert PRIVATE.search("import _bentoml_impl.worker")
    assert not PRIVATE.search("import bentoml.models")
