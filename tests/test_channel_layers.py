"""The channel layers as configured: a consumer's receive() ends when it is cancelled, at whatever step.

Channels cancels a consumer's receive() when its socket closes (and the robot consumer cancels its
listener). A receive that survives the cancellation pops from Redis forever and keeps its consumer alive.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

from fleet.fanout import LAYER as FANOUT_LAYER

# Enough event-loop steps to land a cancellation on each step of a receive: the lock, the cleanup
# script's send and read, the blocking pop's send, and the pop itself.
STEPS = 40


@pytest.mark.parametrize("alias", [DEFAULT_CHANNEL_LAYER, FANOUT_LAYER])
async def test_a_receive_ends_on_its_first_cancellation_at_every_step(alias):
    survived = []
    for steps in range(STEPS):
        layer = channel_layers.make_backend(alias)
        channel = await layer.new_channel()
        receive = asyncio.create_task(layer.receive(channel))
        for _ in range(steps):
            await asyncio.sleep(0)
        receive.cancel()
        done, _ = await asyncio.wait([receive], timeout=1.0)
        if not done:
            survived.append(steps)
            receive.cancel()  # again, so that the test itself ends
            await asyncio.wait([receive], timeout=10.0)
        await layer.flush()
    assert survived == []
