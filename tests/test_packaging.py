"""The package builds as a wheel that installs into a fresh virtual environment and works there.

This is what `pip install perceiver_nb` gives a user: no notebooks, no repository, only the wheel and its declared
runtime requirements. Torch is installed first from the same specification the Makefile uses (the CPU build here),
then the wheel with its other requirements, then the public names are imported from the package top level.
"""
import importlib, json, os, pkgutil, subprocess, sys, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    assert res.returncode == 0, f'{" ".join(map(str, cmd))} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}'
    return res.stdout


def _public_names() -> list[str]:
    import perceiver_nb
    mods = [m.name for m in pkgutil.walk_packages(perceiver_nb.__path__, 'perceiver_nb.')
            if not m.name.split('.')[-1].startswith('_')]
    return sorted({n for m in mods for n in getattr(importlib.import_module(m), '__all__', [])})


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('dist')
    _run([sys.executable, '-m', 'build', '--wheel', '--outdir', str(out), str(ROOT)])
    wheels = list(out.glob('perceiver_nb-*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    modules = {n for n in names if n.startswith('perceiver_nb/') and n.endswith('.py')}
    expected = {str(p.relative_to(ROOT)) for p in (ROOT/'perceiver_nb').rglob('*.py') if '__pycache__' not in p.parts}
    assert modules == expected, (modules ^ expected)
    assert not any(n.endswith('.ipynb') for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('METADATA'))).decode()
    for req in ('torch', 'numpy', 'safetensors'): assert f'Requires-Dist: {req}' in meta


def test_wheel_installs_and_imports(wheel, tmp_path):
    venv = tmp_path/'venv'
    _run([sys.executable, '-m', 'venv', str(venv)])
    py = venv/'bin'/'python'
    torch_spec = os.environ.get('TORCH_SPEC', 'torch==2.13.0').split()
    _run([str(py), '-m', 'pip', 'install', '-q', *torch_spec])
    _run([str(py), '-m', 'pip', 'install', '-q', str(wheel)])
    _run([str(py), '-m', 'pip', 'check'])
    names = _public_names()
    assert 'PerceiverConfig' in names
    code = (f'import json, perceiver_nb; from perceiver_nb import {", ".join(names)}; '
            'print(json.dumps([perceiver_nb.__version__, perceiver_nb.__file__]))')
    version, file = json.loads(_run([str(py), '-c', code], cwd=tmp_path).strip().splitlines()[-1])
    assert Path(file).is_relative_to(venv), f'imported {file}, not the installed wheel'
    import perceiver_nb
    assert version == perceiver_nb.__version__
