"""Model pages and API (filled in by the training issue)."""
from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["models"])
