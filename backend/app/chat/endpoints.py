import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.chat import service
from app.chat.schemas import ChatHistoryPage, ChatRequest
from app.chat.tasks import CHAT
from app.core.errors import Conflict, NotAuthenticated, ServiceUnavailable, error_responses
from app.core.inbound import MAX_ID
from app.core.rate_limit import RateLimited
from app.deps import CurrentParticipant, DatabaseDep, DispatcherDep, IdempotencyKey, SessionDep, admitted_submitter
from app.tasks.schemas import TaskAccepted

router = APIRouter(tags=["chat"])


@router.post(
    "/ai/chat2",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    responses=error_responses(NotAuthenticated, Conflict, RateLimited, ServiceUnavailable),
)
async def submit_chat(
    request: ChatRequest,
    participant_id: Annotated[uuid.UUID, Depends(admitted_submitter(CHAT))],
    db: DatabaseDep,
    dispatcher: DispatcherDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> TaskAccepted:
    """Ask the tutor; the answer streams over the WebSocket as `chat_delta` then `chat_result`."""
    task_id = await service.submit(db, participant_id, request, dispatcher, idempotency_key=idempotency_key)
    return TaskAccepted.for_task(task_id, response)


@router.get("/api/chat/history", response_model=ChatHistoryPage, responses=error_responses(NotAuthenticated))
async def chat_history(
    participant_id: CurrentParticipant,
    session: SessionDep,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="return turns older than this message id")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ChatHistoryPage:
    """The caller's conversation with the tutor, oldest first, a page at a time."""
    return await service.history(session, participant_id, before_id=before, limit=limit)
