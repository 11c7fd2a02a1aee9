"""The pool's tokens: no token owed to a waiter is taken by another, none is lost."""

from __future__ import annotations

import anyio
import pytest
from procio_workers._tokens import Tokens

pytestmark = pytest.mark.anyio


async def wait_for_waiters(tokens: Tokens, count: int) -> None:
    while tokens.waiting < count:  # noqa: ASYNC110 - the tokens have no event for this
        await anyio.sleep(0.001)


async def test_a_token_owed_to_a_waiter_is_not_taken_by_another() -> None:
    tokens = Tokens(1)
    assert tokens.take_nowait()
    got = anyio.Event()

    async def waiter() -> None:
        await tokens.take()
        got.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_for_waiters(tokens, 1)
            tokens.release()
            # The waiter has not run yet: its token is its own all the same.
            assert not got.is_set()
            assert not tokens.take_nowait()
            assert tokens.available == 0
            await got.wait()
    tokens.release()
    assert tokens.available == 1


async def test_waiters_get_their_tokens_in_the_order_they_asked() -> None:
    tokens = Tokens(1)
    assert tokens.take_nowait()
    order: list[int] = []

    async def waiter(number: int) -> None:
        await tokens.take()
        order.append(number)
        tokens.release()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for number in range(5):
                tg.start_soon(waiter, number)
                await wait_for_waiters(tokens, number + 1)
            tokens.release()
    assert order == [0, 1, 2, 3, 4]
    assert tokens.available == 1


async def test_a_waiter_cancelled_after_its_token_was_handed_over_passes_it_on() -> None:
    tokens = Tokens(1)
    assert tokens.take_nowait()
    second_got = anyio.Event()

    async def first(scope: anyio.CancelScope) -> None:
        with scope:
            await tokens.take()
            raise AssertionError("the cancelled waiter went on")

    async def second() -> None:
        await tokens.take()
        second_got.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(first, scope)
            await wait_for_waiters(tokens, 1)
            tg.start_soon(second)
            await wait_for_waiters(tokens, 2)
            # The first waiter is cancelled, and its token handed to it before it runs
            # (it is still in line: it has not seen its cancellation yet).
            scope.cancel()
            tokens.release()
            await second_got.wait()
            assert tokens.available == 0
    tokens.release()
    assert tokens.available == 1
    assert tokens.waiting == 0


async def test_a_waiter_cancelled_in_line_leaves_it() -> None:
    tokens = Tokens(1)
    assert tokens.take_nowait()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def waiter() -> None:
                with scope:
                    await tokens.take()
                    raise AssertionError("a token was handed to a waiter that was cancelled")

            tg.start_soon(waiter)
            await wait_for_waiters(tokens, 1)
            scope.cancel()
    assert tokens.waiting == 0
    # The release goes to the free tokens, not to the waiter that left.
    tokens.release()
    assert tokens.available == 1


async def test_a_cancelled_taker_takes_no_free_token() -> None:
    tokens = Tokens(2)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await tokens.take()
    assert tokens.available == 2
