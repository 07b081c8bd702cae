"""What `pip install taskcast` puts into site-packages: one import name, and all it needs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


def test_the_wheel_adds_one_import_name_and_carries_its_files(tmp_path: Path) -> None:
    """A wheel of the checkout holds `taskcast` (and its dist-info) at the top, nothing else:
    no `api`, `realtime` or `workers` to shadow an app's own, or `tests`/`benchmarks`."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("taskcast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"taskcast"}
    for needed in (
        "taskcast/__init__.py",
        "taskcast/py.typed",
        "taskcast/realtime/store.py",
        "taskcast/workers/app.py",
        "taskcast/api/main.py",
        "taskcast/api/static/index.html",
        "taskcast/api/static/taskcast.js",
    ):
        assert needed in names, f"{needed} missing from the wheel"


def test_importing_taskcast_to_emit_loads_no_celery_and_no_web_framework() -> None:
    """A process that only emits pays for neither Celery nor FastAPI; they load on first use."""
    probe = (
        "import sys, taskcast\n"
        "print(sorted(m for m in ('celery', 'fastapi', 'starlette') if m in sys.modules))\n"
        "taskcast.install, taskcast.realtime_app\n"
        "print(sorted(m for m in ('celery', 'fastapi') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.split("\n")[:2] == ["[]", "['celery', 'fastapi']"], out.stderr
