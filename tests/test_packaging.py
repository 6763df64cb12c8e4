"""The package builds as a wheel that installs into a fresh virtual environment and works there.

This is what `pip install perceiver_nb` gives a user: no notebooks, no repository, only the wheel and its declared
runtime requirements. Torch is installed first from the same specification the Makefile uses (the CPU build here),
then the wheel with its other requirements, then the public names are imported from the package top level. The sdist
(what PyPI serves where no wheel fits, and what distributions repackage) must be complete on its own: built from it,
in the same fresh environment, the package installs and works the same way.
"""
import importlib, json, os, pkgutil, subprocess, sys, tarfile, zipfile
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


def _build(kind: str, out: Path) -> Path:
    "Build the `--wheel` or `--sdist` of the repository into `out`, as the release workflow does; its path."
    _run([sys.executable, '-m', 'build', f'--{kind}', '--outdir', str(out), str(ROOT)])
    found = list(out.glob('perceiver_nb-*.whl' if kind == 'wheel' else 'perceiver_nb-*.tar.gz'))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    return _build('wheel', tmp_path_factory.mktemp('dist'))


@pytest.fixture(scope='module')
def sdist(tmp_path_factory) -> Path:
    return _build('sdist', tmp_path_factory.mktemp('sdist'))


@pytest.fixture(scope='module')
def fresh_venv(tmp_path_factory) -> Path:
    "A new virtual environment with only torch (the Makefile's TORCH_SPEC), shared by the wheel and sdist checks."
    venv = tmp_path_factory.mktemp('venv')/'venv'
    _run([sys.executable, '-m', 'venv', str(venv)])
    py = venv/'bin'/'python'
    _run([str(py), '-m', 'pip', 'install', '-q', *os.environ.get('TORCH_SPEC', 'torch==2.13.0').split()])
    return venv


def _install_and_import(venv: Path, dist: Path, cwd: Path) -> tuple[str, str]:
    "Install `dist` (wheel or sdist) into `venv` in place of any earlier install, import every public name; (version, file)."
    py = venv/'bin'/'python'
    _run([str(py), '-m', 'pip', 'uninstall', '-q', '-y', 'perceiver_nb'])
    _run([str(py), '-m', 'pip', 'install', '-q', str(dist)])
    _run([str(py), '-m', 'pip', 'check'])
    names = _public_names()
    assert 'PerceiverConfig' in names
    code = (f'import json, perceiver_nb; from perceiver_nb import {", ".join(names)}; '
            'm = PerceiverForMaskedLM(PerceiverConfig(num_latents=4, d_latents=8, d_model=8, num_self_attends_per_block=1, '
            'num_self_attention_heads=2, num_cross_attention_heads=1, max_position_embeddings=16)); '
            'print(json.dumps([perceiver_nb.__version__, perceiver_nb.__file__, m.num_parameters()]))')
    version, file, n = json.loads(_run([str(py), '-c', code], cwd=cwd).strip().splitlines()[-1])
    assert Path(file).is_relative_to(venv), f'imported {file}, not the installed package'
    assert n > 0
    import perceiver_nb
    assert version == perceiver_nb.__version__
    return version, file


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    modules = {n for n in names if n.startswith('perceiver_nb/') and n.endswith('.py')}
    expected = {str(p.relative_to(ROOT)) for p in (ROOT/'perceiver_nb').rglob('*.py') if '__pycache__' not in p.parts}
    assert modules == expected, (modules ^ expected)
    assert not any(n.endswith('.ipynb') for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('METADATA'))).decode()
    for req in ('torch', 'numpy', 'safetensors'): assert f'Requires-Dist: {req}' in meta


def test_wheel_installs_and_imports(wheel, fresh_venv, tmp_path):
    _install_and_import(fresh_venv, wheel, tmp_path)


def test_sdist_contents(sdist):
    "Everything setup.py reads (settings.ini, README.md) and the licence; the package; no notebooks, tests or caches."
    top = f'perceiver_nb-{sdist.name.removeprefix("perceiver_nb-").removesuffix(".tar.gz")}/'
    names = {n.removeprefix(top) for n in tarfile.open(sdist).getnames()}
    for needed in ('setup.py', 'settings.ini', 'README.md', 'LICENSE', 'MANIFEST.in', 'PKG-INFO'): assert needed in names, needed
    modules = {n for n in names if n.startswith('perceiver_nb/') and n.endswith('.py')}
    expected = {str(p.relative_to(ROOT)) for p in (ROOT/'perceiver_nb').rglob('*.py') if '__pycache__' not in p.parts}
    assert modules == expected, (modules ^ expected)
    assert not any(n.startswith(('nbs/', 'tests/', 'tools/')) or n.endswith(('.ipynb', '.pyc')) for n in names)
    import configparser
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    assert sdist.name == f'perceiver_nb-{cfg["DEFAULT"]["version"]}.tar.gz'


def test_sdist_installs_and_imports(sdist, fresh_venv, tmp_path):
    "pip builds the wheel from the sdist alone (in its own isolated build environment) and the result works."
    _install_and_import(fresh_venv, sdist, tmp_path)
