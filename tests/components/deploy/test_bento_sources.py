"""The bento's build context: the service's sources, copied from the repository, only."""

from __future__ import annotations

from pathlib import Path

from components.deploy.bento import REPO_ROOT, stage_sources


def test_the_build_context_holds_the_service_sources_and_nothing_else(tmp_path: Path) -> None:
    copied = stage_sources(tmp_path)
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert len(files) == copied
    assert {
        "services/recommender.py",
        "services/settings.py",
        "components/deploy/bento.py",
    } <= files
    assert any(name.startswith("feature_repo/") for name in files)
    assert not [n for n in files if n.startswith((".venv/", "tests/")) or "__pycache__" in n]
    assert all(n.endswith((".py", ".yaml")) for n in files)
    assert all((REPO_ROOT / n).read_bytes() == (tmp_path / n).read_bytes() for n in files)
