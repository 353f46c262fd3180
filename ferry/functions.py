"""`ferry.functions`, as `modal.functions` has it: `Function`, `FunctionCall`, `gather` and the
type `Function.get_current_stats()` returns."""

from ._function import Function, FunctionCall, FunctionStats

gather = FunctionCall.gather

__all__ = ["Function", "FunctionCall", "FunctionStats", "gather"]
