from fastapi import APIRouter, status

from app.auth import service
from app.auth.schemas import Credentials, LoginRequest, TokenResponse
from app.core.errors import Conflict, InvalidCredentials, error_responses
from app.core.rate_limit import RateLimited
from app.deps import AuthRateLimit, SessionDep, SettingsDep

router = APIRouter(prefix="/api/auth", tags=["auth"], dependencies=[AuthRateLimit])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenResponse,
    responses=error_responses(Conflict, RateLimited),
)
async def register(credentials: Credentials, session: SessionDep, settings: SettingsDep) -> TokenResponse:
    """Create an account; returns the new participant id and an access token."""
    return await service.register(session, credentials, settings)


@router.post("/login", response_model=TokenResponse, responses=error_responses(InvalidCredentials, RateLimited))
async def login(request: LoginRequest, session: SessionDep, settings: SettingsDep) -> TokenResponse:
    """Exchange a username and password for an access token."""
    return await service.login(session, request, settings)
