"""The WebSocket route: authenticate, register with the manager, replay history, then stream live."""

import asyncio
import json
import logging
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError

from app.core.config import Settings
from app.core.logging import bind_log_context
from app.core.security import InvalidToken, decode_access_token
from app.realtime.connection import ClientConnection
from app.realtime.envelopes import CloseCode, ControlType, control_frame, is_stream_id
from app.realtime.manager import ConnectionManager

logger = logging.getLogger(__name__)
router = APIRouter()


class _Rejected(Exception):
    def __init__(self, code: int, reason: str):
        self.code, self.reason = code, reason


@router.websocket("/ws/user/{participant_id}")
async def user_socket(websocket: WebSocket, participant_id: str) -> None:
    """A user's live envelope stream (token by `?token=` or a first `auth` frame)."""
    settings: Settings = websocket.app.state.settings
    manager: ConnectionManager = websocket.app.state.manager
    # Accept first: a close code (4401, 4403) can only be sent on an open socket.
    await websocket.accept()
    try:
        # From here on the canonical id from the token, the form the publisher's channel uses.
        participant_id, last_id = await _authenticate(websocket, participant_id, settings)
    except _Rejected as rejected:
        await websocket.close(code=rejected.code, reason=rejected.reason)
        return
    except WebSocketDisconnect:
        return
    bind_log_context(participant_id=participant_id)

    connection = ClientConnection(
        websocket, participant_id, queue_size=settings.ws_send_queue_size, queue_bytes=settings.ws_send_queue_bytes
    )
    try:
        try:
            await manager.open(connection, last_id)
        except RedisError:
            # Redis is down or out of connections: a clear close the client backs off from,
            # not an exception in the ASGI app (which reaches the client as a dropped socket).
            logger.warning("could not open a socket's stream; closing it with 1013", exc_info=True)
            await websocket.close(code=CloseCode.TRY_AGAIN_LATER, reason="try again later")
            return
        await _receive_until_closed(websocket, connection, manager, settings)
    finally:
        # Counted (the user's socket cap, the metrics) until its close is sent or its connection
        # aborted: a socket whose peer reads nothing still holds what was queued for it.
        try:
            await connection.stop()
        finally:
            manager.unregister(connection)


async def _authenticate(websocket: WebSocket, participant_id: str, settings: Settings) -> tuple[str, str | None]:
    """Check the token (query or first frame) against the path; returns the participant and `last_id`."""
    token = websocket.query_params.get("token")
    last_id = websocket.query_params.get("last_id")
    if token is None:
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=settings.ws_auth_timeout_s)
        except TimeoutError:
            raise _Rejected(CloseCode.UNAUTHORIZED, "no auth frame in time") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        raw = message.get("text")  # a binary frame has none: it is no auth frame either
        frame = _parse_frame(raw) if raw is not None else None
        if frame is None or frame.get("type") != ControlType.AUTH or not isinstance(frame.get("token"), str):
            raise _Rejected(CloseCode.UNAUTHORIZED, "first frame must be {type: auth, token}")
        token = frame["token"]
        last_id = frame.get("last_id", last_id)
    try:
        subject = decode_access_token(token, settings)
    except InvalidToken:
        raise _Rejected(CloseCode.UNAUTHORIZED, "invalid or expired token") from None
    if str(subject) != _normalise_uuid(participant_id):
        raise _Rejected(CloseCode.FORBIDDEN, "token does not belong to this participant")
    if last_id is not None and not is_stream_id(last_id):
        raise _Rejected(CloseCode.BAD_REQUEST, "last_id is not a stream id")
    return str(subject), last_id


def _normalise_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def _parse_frame(raw: str) -> dict[str, Any] | None:
    try:
        frame = json.loads(raw)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


async def _receive_until_closed(
    websocket: WebSocket, connection: ClientConnection, manager: ConnectionManager, settings: Settings
) -> None:
    """Read client frames until the socket closes; any frame counts as life, silence past the timeout closes."""
    while connection.close_code is None:
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=settings.ws_idle_timeout_s)
        except TimeoutError:
            connection.request_close(CloseCode.IDLE_TIMEOUT, "idle timeout")
            return
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        raw = message.get("text")
        if raw is None:
            _send_error(connection, "binary_frame", "frames must be JSON text frames")
            continue
        frame = _parse_frame(raw)
        frame_type = frame.get("type") if frame is not None else None
        if frame_type in (ControlType.PONG, ControlType.AUTH):
            continue
        if frame_type == ControlType.RESUME:
            last_id = frame.get("last_id") if frame is not None else None
            if not is_stream_id(last_id):
                _send_error(connection, "bad_last_id", "resume needs last_id: a stream id like 1732300000000-0")
            elif connection.replaying:
                _send_error(connection, "resume_in_progress", "a replay is still being sent; resume after it")
            elif not connection.may_resume():
                _send_error(connection, "rate_limited", "too many resumes; wait a few seconds")
            else:
                try:
                    await manager.resume(connection, str(last_id))
                except RedisError:
                    logger.warning("a resume could not read history", exc_info=True)
                    _send_error(connection, "history_unavailable", "history cannot be read now; resume again soon")
        elif frame is None:
            _send_error(connection, "malformed_frame", "frames must be JSON objects")
        else:
            _send_error(connection, "unknown_frame_type", f"unknown frame type {str(frame_type)[:40]!r}")


def _send_error(connection: ClientConnection, code: str, message: str) -> None:
    connection.offer_control(control_frame(ControlType.ERROR, {"code": code, "message": message}))
