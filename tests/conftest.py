"""Shared pytest setup: the repository root on sys.path (for `tools/`) and quiet, deterministic defaults."""
import os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
os.environ.setdefault('MPLBACKEND', 'Agg')
