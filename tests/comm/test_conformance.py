import pytest

from shoal.testing.transport import (
    CHECKS,
    MakePair,
    check_transport,
    inproc_pair,
    tcp_pair,
    tls_pair,
)

TRANSPORTS: dict[str, MakePair] = {"tcp": tcp_pair, "inproc": inproc_pair, "tls": tls_pair}


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_conformance(transport: str, check) -> None:  # type: ignore[no-untyped-def]
    await check(TRANSPORTS[transport])


async def test_check_transport_runs_everything() -> None:
    await check_transport(inproc_pair)
