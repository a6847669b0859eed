"""`taskwire admin add | remove | list`: operators are accounts promoted from the command line.

Whoever can run this command on a server already holds its database; nobody else can make an
operator. A name in ADMIN_USERNAMES is reserved (nobody registers it over HTTP), and `add`
creates its account here, with a password read from the terminal or standard input.
"""

import argparse
import contextlib
import getpass
import sys
from collections.abc import Iterator

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth import repository
from app.auth.names import check_password, check_username
from app.core.config import Settings
from app.core.security import hash_password
from app.db.session import create_sync_engine, sync_sessionmaker


def add_arguments(admin: argparse.ArgumentParser) -> None:
    """The `admin` subcommands and their arguments."""
    actions = admin.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="make an account an operator (creating it, with a password, if it is new)")
    add.add_argument("username")
    add.add_argument("--password-stdin", action="store_true", help="read a new account's password from standard input")
    remove = actions.add_parser("remove", help="take an account's operator rights away")
    remove.add_argument("username")
    actions.add_parser("list", help="print the operators' usernames")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Carry out one `admin` subcommand; 0 on success, 1 with a message otherwise."""
    try:
        if args.action == "list":
            return _list(settings)
        username = check_username(args.username)
    except ValueError as exc:
        print(f"taskwire admin: {exc}", file=sys.stderr)
        return 1
    if args.action == "remove":
        return _set(settings, username, is_operator=False)
    return _add(settings, username, read_stdin=args.password_stdin)


def _list(settings: Settings) -> int:
    with _session(settings) as session:
        for name in repository.operator_names(session):
            print(name)
    return 0


def _set(settings: Settings, username: str, *, is_operator: bool) -> int:
    with _session(settings) as session:
        user = repository.set_operator(session, username, is_operator)
        if user is None:
            print(f"taskwire admin: there is no account {username!r}", file=sys.stderr)
            return 1
        session.commit()
    print(f"{username} is {'now' if is_operator else 'no longer'} an operator")
    return 0


def _add(settings: Settings, username: str, *, read_stdin: bool) -> int:
    with _session(settings) as session:
        exists = repository.get_by_username(session, username) is not None
    if exists:
        return _set(settings, username, is_operator=True)
    with _session(settings) as session:
        try:
            password = _new_password(read_stdin)
            check_password(password, username)
        except ValueError as exc:
            print(f"taskwire admin: {exc}", file=sys.stderr)
            return 1
        try:
            repository.add_user(session, username, hash_password(password))
            repository.set_operator(session, username, True)
            session.commit()
        except IntegrityError:
            print(f"taskwire admin: {username!r} was registered meanwhile; run this again", file=sys.stderr)
            return 1
    print(f"created {username}, an operator")
    return 0


def _new_password(read_stdin: bool) -> str:
    if read_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password for the new operator account: ")
        if getpass.getpass("Again: ") != password:
            raise ValueError("the two passwords differ")
    else:
        raise ValueError("no terminal to ask for a password: pass --password-stdin and pipe it in")
    if not 8 <= len(password) <= 256:
        raise ValueError("a password has 8 to 256 characters")
    return password


@contextlib.contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    engine = create_sync_engine(settings.database_url)
    try:
        with sync_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()
