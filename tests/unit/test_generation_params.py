"""Every client-controlled field is validated with a clear INVALID_ARGUMENT message."""

from __future__ import annotations

import pytest

from server.api import inference_pb2 as pb
from server.errors import InvalidArgument
from server.runtime.params import GenerateParams, GenerationLimits, check_context
from server.servicers.convert import generate_params_from_pb

LIMITS = GenerationLimits(default_max_new_tokens=32, max_new_tokens_limit=256)


def test_defaults_are_greedy_with_the_server_default_length() -> None:
    params = generate_params_from_pb(pb.GenerateRequest(prompt="hi"), LIMITS)
    assert params.max_new_tokens == 32
    assert params.sampling.greedy and params.sampling.top_p == 1.0 and params.sampling.seed is None
    assert len(params.request_id) == 32  # server-assigned


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(prompt=""), "prompt"),
        (dict(prompt="  \n"), "prompt"),
        (dict(prompt="hi", max_new_tokens=0), "max_new_tokens"),
        (dict(prompt="hi", max_new_tokens=257), "max_new_tokens"),
        (dict(prompt="hi", temperature=-0.5), "temperature"),
        (dict(prompt="hi", temperature=float("nan")), "temperature"),
        (dict(prompt="hi", top_p=0.0), "top_p"),
        (dict(prompt="hi", top_p=1.5), "top_p"),
        (dict(prompt="hi", stop=[""]), "stop"),
        (dict(prompt="hi", stop=["x" * 65]), "stop"),
        (dict(prompt="hi", stop=[str(i) for i in range(9)]), "stop"),
        (dict(prompt="hi", request_id="bad\nid"), "request_id"),
        (dict(prompt="hi", request_id="x" * 129), "request_id"),
    ],
)
def test_invalid_fields_are_rejected(fields: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        generate_params_from_pb(pb.GenerateRequest(**fields), LIMITS)


def test_context_overflow_is_rejected() -> None:
    check_context(10, 20, 64)
    with pytest.raises(InvalidArgument, match="context"):
        check_context(64, 1, 64)
    with pytest.raises(InvalidArgument, match="exceeds"):
        check_context(50, 20, 64)


def test_plain_values_validate_like_protobuf_and_name_the_clients_field() -> None:
    params = GenerateParams.validated(LIMITS, "hi", max_new_tokens=5, temperature=0.5, stop=("x",),
                                      add_special_tokens=False)
    assert (params.max_new_tokens, params.sampling.temperature, params.stop) == (5, 0.5, ("x",))
    assert not params.add_special_tokens
    assert GenerateParams.validated(LIMITS, "hi").max_new_tokens == 32
    with pytest.raises(InvalidArgument, match="max_tokens must be between 1 and 256"):
        GenerateParams.validated(LIMITS, "hi", max_new_tokens=0, max_new_tokens_field="max_tokens")
    with pytest.raises(InvalidArgument, match="top_p"):
        GenerateParams.validated(LIMITS, "hi", top_p=0.0)
