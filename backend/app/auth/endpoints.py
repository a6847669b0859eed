from fastapi import APIRouter, status

from app.auth import service
from app.auth.schemas import Credentials, LoginRequest, TokenResponse
from app.core.errors import Conflict, InvalidCredentials, ServiceUnavailable, error_responses
from app.core.rate_limit import RateLimited
from app.deps import AuthRateLimit, HashingDep, RateLimiterDep, SessionDep, SettingsDep

router = APIRouter(prefix="/api/auth", tags=["auth"], dependencies=[AuthRateLimit])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenResponse,
    responses=error_responses(Conflict, RateLimited, ServiceUnavailable),
)
async def register(
    credentials: Credentials, session: SessionDep, settings: SettingsDep, hashing: HashingDep
) -> TokenResponse:
    """Create an account; returns the new participant id and an access token."""
    return await service.register(session, credentials, settings, hashing)


@router.post(
    "/login",
    response_model=TokenResponse,
    responses=error_responses(InvalidCredentials, RateLimited, ServiceUnavailable),
)
async def login(
    request: LoginRequest, session: SessionDep, settings: SettingsDep, hashing: HashingDep, limiter: RateLimiterDep
) -> TokenResponse:
    """Exchange a username and password for an access token."""
    # Per username as well as per address: guessing one learner's password from many addresses
    # meets this limit, and a crowd behind one school address still meets only its own.
    await limiter.check("login-user", request.canonical_username, settings.login_user_rate_limit)
    return await service.login(session, request, settings, hashing)
