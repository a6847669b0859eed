"""The one place configuration is read: environment variables (and `.env`) into `Settings`."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Refused outside development (see the validator below).
DEFAULT_JWT_SECRET = "dev-insecure-change-me"  # noqa: S105


class Settings(BaseSettings):
    """Every setting Taskwire reads, with its default; names match the environment variables."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"

    # Local state of `taskwire run`: the default SQLite file and the embedded Redis's data.
    data_dir: Path = Path("var")
    database_url: str = ""  # empty: a SQLite file in data_dir
    # None means "not configured": `taskwire run` then starts an embedded redis-server.
    redis_url: str | None = None
    # The bus: pub/sub, history, leases, cancel flags, presence, rate limits and metrics. Unset,
    # it is REDIS_URL; REDIS_URL stays the Celery broker (Celery cannot use a Redis Cluster).
    bus_redis_url: str | None = None
    # BUS_REDIS_URL is a seed node of a Redis Cluster (docs/scaling.md).
    bus_redis_cluster: bool = False

    jwt_secret: str = DEFAULT_JWT_SECRET
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_expire_minutes: int = Field(default=12 * 60, gt=0)

    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model_fast: str = "deepseek-chat"
    llm_model_strong: str = "deepseek-reasoner"
    llm_routing_threshold_chars: int = Field(default=1000, gt=0)
    llm_offline_delay_ms: int = Field(default=30, ge=0)
    llm_connect_timeout_s: float = Field(default=10, gt=0)
    llm_read_timeout_s: float = Field(default=60, gt=0)

    chat_history_turns: int = Field(default=10, ge=0)
    chat_history_chars: int = Field(default=6000, ge=0)
    chat_delta_interval_ms: int = Field(default=50, ge=0)
    # Include the exact prompt in chat_result (it is always stored with the answer).
    chat_expose_prompt: bool = False

    ws_ping_interval_s: float = Field(default=20, gt=0)
    ws_idle_timeout_s: float = Field(default=30, gt=0)
    ws_auth_timeout_s: float = Field(default=5, gt=0)
    ws_send_queue_size: int = Field(default=256, gt=0)
    # Bytes a socket may have queued and unwritten before it is closed as a slow consumer (4408);
    # one replay larger than this still goes to a socket with nothing else queued.
    ws_send_queue_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    ws_max_frame_bytes: int = Field(default=64 * 1024, gt=0)
    # Off by default: deflate state costs memory per socket (docs/performance.md) and CPU per
    # frame, and envelopes are small.
    ws_per_message_deflate: bool = False
    bus_canary_interval_s: float = Field(default=5, gt=0)
    # While envelopes reach a replica at two or more per this many milliseconds, it reads its
    # subscription at most once per window, so one wake-up handles several: less CPU per delivery
    # for up to this much more latency (docs/performance.md §3). Slower streams are read as they
    # come. 0: off.
    bus_read_window_ms: float = Field(default=1, ge=0, le=50)
    shutdown_drain_timeout_s: float = Field(default=3, ge=0)

    history_maxlen: int = Field(default=1000, gt=0)
    history_ttl_s: int = Field(default=24 * 3600, gt=0)

    # Tutor answers one worker process streams at once: they wait on the model, not the CPU, so a
    # process holds hundreds (460 measured on 0.85 of a core, docs/scaling.md); its LLM connection
    # pool is this size too. Grading runs SANDBOX_MAX_CONCURRENCY at once, in its own process.
    chat_concurrency: int = Field(default=512, gt=0)
    # The worker's event loop watchdog warns, with a stack, when the loop is held up this long.
    worker_loop_blocked_warn_ms: float = Field(default=100, gt=0)
    task_lease_ttl_s: float = Field(default=30, gt=0)
    task_reconcile_interval_s: float = Field(default=10, gt=0)
    task_max_attempts: int = Field(default=5, gt=0)
    # Touched by each worker's reconciler pass, for container health checks (unset: none).
    worker_heartbeat_file: Path | None = None
    task_retry_attempts: int = Field(default=4, gt=0)
    task_retry_base_delay_s: float = Field(default=1, ge=0)
    task_retry_max_delay_s: float = Field(default=30, ge=0)
    celery_visibility_timeout_s: int = Field(default=1800, gt=0)
    celery_events: bool = False  # worker heartbeats and task events, for Flower
    # How often kombu scans for unacknowledged messages older than the visibility timeout:
    # every interval × throttle seconds (kombu's defaults: 10 × 10).
    celery_unacked_restore_interval_s: float = Field(default=10, gt=0)
    celery_unacked_restore_throttle: int = Field(default=10, gt=0)
    chat_soft_time_limit_s: int = Field(default=120, gt=0)
    chat_time_limit_s: int = Field(default=150, gt=0)

    chromium_path: str = "/usr/bin/chromium"
    sandbox_max_concurrency: int = Field(default=5, gt=0)
    sandbox_queue_timeout_s: float = Field(default=30, gt=0)
    sandbox_timeout_s: float = Field(default=15, gt=0)
    # A learner's submissions waiting for their grade; one more is refused (429 too_many_in_flight).
    submission_max_in_flight: int = Field(default=5, gt=0)
    # Gradings of one learner in the pool at once; the rest wait (within the queue timeout).
    sandbox_max_per_learner: int = Field(default=1, gt=0)
    # A learner's page's JavaScript heap: a memory bomb ends its own page, quickly.
    sandbox_js_heap_mb: int = Field(default=256, ge=16)
    # How a grading lane (a browser in a process tree of its own) is walled off: `auto` uses
    # network, PID and mount namespaces where the host allows and says so where it does not;
    # `namespaces` refuses to grade without them; `process` never tries (docs/security.md).
    sandbox_isolation: Literal["auto", "namespaces", "process"] = "auto"
    # Private memory each process of a lane may hold (the kernel's RLIMIT_DATA: reserved and
    # writable, so Node needs ~700 MiB before any work), and the size of its temporary files (a
    # tmpfs in its own mount namespace; the largest file elsewhere).
    sandbox_memory_mb: int = Field(default=1024, ge=768)
    sandbox_disk_mb: int = Field(default=256, ge=32)
    # An idle lane (about 300 MiB) is stopped after this long; the next grading starts one.
    sandbox_lane_idle_s: float = Field(default=600, gt=0)

    # Host headers this service answers to, and browser origins allowed to call it cross-origin.
    allowed_hosts: list[str] = ["*"]
    cors_origins: list[str] = []

    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # A request's headers must arrive within this of its first byte, and its body within the
    # second of its headers, or the connection is closed (a trickling client holds nothing long).
    http_header_timeout_s: float = Field(default=10, gt=0)
    http_body_timeout_s: float = Field(default=60, gt=0)
    # "requests/seconds", counted in Redis across replicas.
    submit_rate_limit: str = Field(default="30/60", pattern=r"^\d+/\d+$")
    # Submits are refused (503 overloaded) while their queue holds this many tasks no worker
    # has taken yet; 0 never refuses. About the workers' throughput × the longest wait to allow.
    queue_max_backlog: int = Field(default=200, ge=0)
    auth_rate_limit: str = Field(default="20/60", pattern=r"^\d+/\d+$")
    # Sign-in attempts per username (from any address), on top of AUTH_RATE_LIMIT per address.
    login_user_rate_limit: str = Field(default="10/300", pattern=r"^\d+/\d+$")
    # argon2 runs at once per API replica (each takes ~50 ms of a core and 64 MiB), and how long
    # a sign-in waits for a turn before it is told 503 `busy`.
    auth_hash_concurrency: int = Field(default=2, gt=0)
    auth_hash_wait_s: float = Field(default=5, gt=0)
    # Addresses whose X-Forwarded-For is believed (uvicorn's --forwarded-allow-ips): the proxy in
    # front of the replicas; compose sets it. Everyone else's address is their own.
    forwarded_allow_ips: str = "127.0.0.1"
    ws_max_sockets_per_user: int = Field(default=20, gt=0)

    # Usernames (comma-separated) who may open the ops page (/ops, /api/ops/*); everyone else gets 403.
    admin_usernames: str = ""
    # How often the ops page's figures are pushed to its WebSocket (only when they changed).
    ops_push_interval_s: float = Field(default=2, gt=0)
    # When set, /metrics wants `Authorization: Bearer <METRICS_TOKEN>`; unset, it is open to
    # whoever reaches the replica (compose's nginx refuses it from outside).
    metrics_token: str | None = None

    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'taskwire.db'}"
        if self.environment != "development" and self.jwt_secret == DEFAULT_JWT_SECRET:
            raise ValueError("JWT_SECRET must be set to a private value outside development")
        if self.chat_time_limit_s <= self.chat_soft_time_limit_s:
            raise ValueError("CHAT_TIME_LIMIT_S must be greater than CHAT_SOFT_TIME_LIMIT_S")
        if self.bus_redis_cluster and not self.bus_redis_url:
            raise ValueError("BUS_REDIS_CLUSTER needs BUS_REDIS_URL (the broker, REDIS_URL, cannot be a cluster)")
        return self

    @property
    def required_redis_url(self) -> str:
        """The Redis URL, for components that cannot run without one."""
        if not self.redis_url:
            raise RuntimeError("REDIS_URL is not set (only `taskwire run` starts Redis for you)")
        return self.redis_url

    @property
    def required_bus_redis_url(self) -> str:
        """The bus Redis URL: BUS_REDIS_URL, or the broker's when it is not set."""
        return self.bus_redis_url or self.required_redis_url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
