"""Every kind of task Taskwire runs: the one registry the API and the workers share.

Adding a kind is one handler, one endpoint and one entry here (docs/architecture.md).
"""

from app.chat.tasks import CHAT
from app.submissions.tasks import SUBMISSION
from app.tasks.registry import TaskRegistry

REGISTRY = TaskRegistry([CHAT, SUBMISSION])
