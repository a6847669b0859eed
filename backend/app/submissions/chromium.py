"""Whether this host can grade: the Chromium executable is there and runnable (no Playwright import)."""

import os
import shutil


def chromium_missing(path: str) -> str | None:
    """Why the Chromium at `path` (CHROMIUM_PATH; a bare name is looked up on PATH) cannot run, or None."""
    found = shutil.which(path) if os.sep not in path else path
    if not found or not os.path.exists(found):
        return f"no Chromium at {path} (install chromium, or set CHROMIUM_PATH)"
    if not os.access(found, os.X_OK):
        return f"Chromium at {path} is not executable"
    return None


def first_line(text: str) -> str:
    """The first non-empty line of an error message (Playwright's run to dozens of lines)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text)[:300]
