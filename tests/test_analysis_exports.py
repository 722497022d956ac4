"""`convemerge.analysis` re-exports its submodules' public names lazily: each is the submodule's own object, the
list covers every name a submodule declares public, and importing the package loads neither matplotlib nor the
submodules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import convemerge.analysis as analysis


def test_every_export_is_the_submodules_object():
    for name in analysis.__all__:
        module = importlib.import_module(f"convemerge.analysis.{analysis._WHERE[name]}")
        assert getattr(analysis, name) is getattr(module, name), name
    for key in ("layer_agop", "agops", "nfa_table", "nfa_convergence", "participation_ratio",
                "locality_summary", "description_length", "eigenfilters", "nonzero_per_layer"):
        assert key in analysis.__all__ and key in dir(analysis)


def test_exports_cover_each_submodules_public_api():
    for module_name, names in analysis._EXPORTS.items():
        module = importlib.import_module(f"convemerge.analysis.{module_name}")
        public = getattr(module, "__all__", None)
        if public is None:  # no __all__: the module's own public functions and classes
            public = [n for n, v in vars(module).items() if not n.startswith("_") and callable(v)
                      and getattr(v, "__module__", None) == module.__name__]
        assert set(public) <= set(names), (module_name, set(public) - set(names))


def test_unknown_name_is_an_attribute_error():
    try:
        analysis.no_such_function  # noqa: B018
    except AttributeError as exc:
        assert "no_such_function" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_package_import_is_cheap():
    # one fresh interpreter: nothing heavy on import, nor on taking a pure function
    code = ("import sys, convemerge.analysis as a; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib'; "
            "assert 'convemerge.analysis.cnfa' not in sys.modules; "
            "a.nfa_table; assert 'matplotlib' not in sys.modules, 'nfa_table pulled matplotlib'")
    subprocess.run([sys.executable, "-c", code], check=True)
