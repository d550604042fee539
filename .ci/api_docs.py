"""Build the API reference with pdoc into OUT_DIR; fail on any import error or pdoc warning.

Usage: python .ci/api_docs.py OUT_DIR

Every public module is named explicitly (`pdoc keras_gradcam` alone documents only the
submodules listed in the package's `__all__`), so a module that fails to import, or a
docstring or signature pdoc cannot render, fails CI. Modules whose name has a part starting
with `_` (`__main__`, `_names`, `metrics._checks`, ...) are left out, as pdoc does.
"""

import pathlib
import sys
import warnings

import pdoc

ROOT = pathlib.Path(__file__).resolve().parent.parent


def public_modules(package: str = "keras_gradcam") -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return names


def main(out_dir: str) -> int:
    sys.path.insert(0, str(ROOT))
    modules = public_modules()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", module="pdoc")
        # A package pulls in the submodules of its __all__, which are named here again.
        warnings.filterwarnings("ignore", message="The module specification", module="pdoc")
        pdoc.pdoc(*modules, output_directory=pathlib.Path(out_dir))
    pages = list(pathlib.Path(out_dir).rglob("*.html"))
    print(f"API reference: {len(pages)} pages for {len(modules)} modules in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
