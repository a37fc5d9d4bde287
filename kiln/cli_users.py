"""`kiln users`: accounts from the terminal (whoever runs it owns the data dir, so no login).

kiln users add NAME [--admin] [--password-stdin]   the first admin comes from here
kiln users list
kiln users delete NAME
kiln users password NAME [--password-stdin]        every session of NAME ends
kiln users token NAME [--label L]                  prints a new API token (shown once)
kiln users revoke TOKEN_ID
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kiln.accounts import AccountError, Accounts
from kiln.cli_common import refused, settings_of
from kiln.web.formatting import timestamp as when


def add_user_commands(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="accounts: add, list, delete, password, token, revoke")
    cmds = users.add_subparsers(dest="users_command", required=True)

    add = cmds.add_parser("add", help="create an account (asks for its password)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may manage users and change every job")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(func=_refusing(cmd_add))

    lst = cmds.add_parser("list", help="accounts and their API tokens")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_refusing(cmd_list))

    delete = cmds.add_parser("delete", help="delete an account, its tokens and sessions (its jobs stay)")
    delete.add_argument("name")
    delete.set_defaults(func=_refusing(cmd_delete))

    password = cmds.add_parser("password", help="set a new password (ends every session of the user)")
    password.add_argument("name")
    password.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    password.set_defaults(func=_refusing(cmd_password))

    token = cmds.add_parser("token", help="create an API token for scripts (Authorization: Bearer ...)")
    token.add_argument("name")
    token.add_argument("--label", default="", help="what the token is for")
    token.set_defaults(func=_refusing(cmd_token))

    revoke = cmds.add_parser("revoke", help="revoke an API token by its id (kiln users list)")
    revoke.add_argument("token_id", type=int)
    revoke.set_defaults(func=_refusing(cmd_revoke))


@contextmanager
def _accounts(args: argparse.Namespace) -> Iterator[Accounts]:
    accounts = Accounts(settings_of(args).db_path)
    try:
        yield accounts
    finally:
        accounts.close()


def _refusing(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """An AccountError (unknown user, weak password ...) is the user's message and exit 1."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except AccountError as exc:
            return refused(exc)

    return run


def _read_password(args: argparse.Namespace, name: str) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        print("error: no terminal to ask for the password: use --password-stdin", file=sys.stderr)
        return None
    first = getpass.getpass(f"Password for {name}: ")
    if getpass.getpass("Again: ") != first:
        print("error: the passwords differ", file=sys.stderr)
        return None
    return first


def cmd_add(args: argparse.Namespace) -> int:
    password = _read_password(args, args.name)
    if password is None:
        return 2
    with _accounts(args) as accounts:
        accounts.add_user(args.name, password, is_admin=args.admin)
    print(f"Added {'admin ' if args.admin else ''}{args.name}.")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _accounts(args) as accounts:
        users, tokens = accounts.list_users(), accounts.list_tokens()
    if args.json:
        print(json.dumps({"users": users, "tokens": tokens}, indent=1))
        return 0
    if not users:
        print("No accounts. The first admin: kiln users add NAME --admin")
    for u in users:
        print(f"{u['name']:<20} {'admin' if u['is_admin'] else 'user':<6} created {when(u['created'])}")
        for t in (t for t in tokens if t["username"] == u["name"]):
            used = f"last used {when(t['last_used'])}" if t["last_used"] else "never used"
            print(f"    token {t['id']:<5} {t['label'] or '-':<20} created {when(t['created'])}, {used}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _accounts(args) as accounts:
        accounts.delete_user(args.name)
    print(f"Deleted {args.name} (their jobs stay).")
    return 0


def cmd_password(args: argparse.Namespace) -> int:
    password = _read_password(args, args.name)
    if password is None:
        return 2
    with _accounts(args) as accounts:
        accounts.set_password(args.name, password)
    print(f"New password for {args.name}; their sessions ended.")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    with _accounts(args) as accounts:
        token_id, token = accounts.create_token(args.name, args.label)
    print(
        f"token {token_id} for {args.name} (shown once; send it as 'Authorization: Bearer <token>'):", file=sys.stderr
    )
    print(token)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with _accounts(args) as accounts:
        found = accounts.revoke_token(args.token_id)
    if not found:
        print(f"error: no token {args.token_id}", file=sys.stderr)
        return 1
    print(f"Revoked token {args.token_id}.")
    return 0
