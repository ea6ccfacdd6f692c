"""``aitbc``: wallet, jobs, chain and devnet commands for people and scripts.

The RPC to talk to: ``--rpc URL`` with ``--token-file FILE`` or ``--data-dir DIR``
(env ``AITBC_RPC``, ``AITBC_RPC_TOKEN_FILE``); ``--devnet`` uses peer1 of a running devnet.
A wallet is an encrypted key file (``--wallet FILE``); its password comes from
``AITBC_WALLET_PASSWORD`` or a prompt, and only commands that sign ask for it. Global
options may stand before or after the subcommand.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import trio

from aitbc_p2p.chain import genesis_from_json
from aitbc_p2p.cli import devnet
from aitbc_p2p.consensus.proofs import JobProof, verify_receipt
from aitbc_p2p.crypto import PrivateKey, key_file_address, load_key_file, save_key_file
from aitbc_p2p.crypto.keys import validate_address
from aitbc_p2p.exceptions import AitbcError, ConfigError, RpcError
from aitbc_p2p.market.audit import Level
from aitbc_p2p.rpc import RpcClient, result_image
from aitbc_p2p.types import aitbc, format_aitbc

DEFAULT_RPC = "http://127.0.0.1:8006"
DEFAULT_NODES = Path("nodes/devnet")
DEFAULT_RUN = Path(".devnet")


PASSWORD_ENV = "AITBC_WALLET_PASSWORD"


def _password(args: argparse.Namespace, *, confirm: bool = False) -> str:
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    if args.devnet:
        return devnet.DEVNET_WALLET_PASSWORD
    if not sys.stdin.isatty():
        raise AitbcError(f"no terminal to ask for the wallet password: set {PASSWORD_ENV}")
    first = getpass.getpass("wallet password: ")
    if confirm and getpass.getpass("again: ") != first:
        raise AitbcError("passwords differ")
    return first


def _wallet_path(args: argparse.Namespace) -> Path:
    if args.wallet:
        return Path(args.wallet)
    if args.devnet:
        return Path(args.nodes_dir) / "wallets" / "client.json"
    return Path.home() / ".aitbc" / "wallets" / "default.json"


def _wallet(args: argparse.Namespace) -> PrivateKey:
    """The wallet's key: the file is found (and its address read) before the password is asked."""
    path = _wallet_path(args)
    key_file_address(path)
    return load_key_file(path, _password(args))


def _rpc(args: argparse.Namespace) -> RpcClient:
    if args.devnet:
        procs = devnet.load_state(args.run_dir)
        if not procs:
            raise AitbcError(f"no devnet running in {args.run_dir}; start one with 'aitbc devnet up'")
        return procs[0].rpc()
    url = args.rpc or os.environ.get("AITBC_RPC")
    token_file = args.token_file or os.environ.get("AITBC_RPC_TOKEN_FILE")
    if token_file is None and args.data_dir:
        # The data directory names both: rpc.token, and the URL in node.json (unless given).
        return RpcClient.from_data_dir(args.data_dir, url=url)
    url = url or DEFAULT_RPC
    if token_file is None:
        raise AitbcError("the RPC needs a token: pass --token-file, --data-dir or --devnet")
    return RpcClient(url, token=Path(token_file).read_text().strip())


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


async def _wallet_cmd(args: argparse.Namespace) -> None:
    if args.wallet_command == "new":
        path = _wallet_path(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise AitbcError(f"{path} exists; refusing to overwrite a wallet")
        key = PrivateKey.generate()
        save_key_file(path, key, _password(args, confirm=True))
        print(f"new wallet {path}\naddress {key.address}")
        return
    address = key_file_address(_wallet_path(args))  # in clear in the file: no password needed
    if args.wallet_command == "address":
        print(address)
        return
    async with _rpc(args) as rpc:
        if args.wallet_command == "balance":
            acct = await rpc.account(address)
            print(f"{address}\nbalance {acct['balance_aitbc']} AITBC  (nonce {acct['nonce']})")
        elif args.wallet_command == "send":
            to = validate_address(args.to)
            amount = aitbc(args.amount)
            tx_hash = await rpc.transfer(_wallet(args), to, amount)
            print(f"sent {args.amount} AITBC to {to}\ntx {tx_hash}")
            if args.wait:
                found = await rpc.wait_tx(tx_hash)
                print(f"committed in block {found['height']}")
        elif args.wallet_command == "history":
            for tx in await rpc.history(address, args.limit):
                p = tx["payload"]
                amount = p.get("amount")
                what = f"{format_aitbc(amount)} AITBC" if isinstance(amount, int) else ""
                print(f"#{tx['height']:<6} {tx['kind']:<12} {tx['from'][:20]}... {what} {tx['hash'][:16]}")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.message is not None:
        params["message"] = args.message
    if args.prompt is not None:
        params["prompt"] = args.prompt
    for item in args.param or []:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise AitbcError(f"--param {item!r}: write NAME=VALUE (VALUE as JSON, or plain text)")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value  # plain text: --param model=tiny
    return params


def _verify_proof(args: argparse.Namespace) -> None:
    """``aitbc job verify FILE``: a saved receipt proof checked against the genesis alone;
    prints what it proves, or fails naming the check that failed."""
    genesis_path = args.genesis or (Path(args.nodes_dir) / "genesis.json" if args.devnet else None)
    if genesis_path is None:
        raise ConfigError("name the chain's genesis: --genesis genesis.json (or --devnet)")
    try:
        genesis = genesis_from_json(genesis_path.read_text())
        proof = JobProof.from_json(json.loads(args.file.read_text()))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {e}") from e
    _print({"verified": True, **verify_receipt(proof, genesis).to_json()})


async def _job_cmd(args: argparse.Namespace) -> None:
    async with _rpc(args) as rpc:
        if args.job_command == "submit":
            key = _wallet(args)
            job_id = await rpc.submit_job(
                key,
                args.workload,
                _params(args),
                max_price=aitbc(args.max_price),
                max_runtime_s=args.max_runtime,
                verification=args.verify,
                progress=lambda s: print(s, file=sys.stderr),
            )
            if args.stream:
                await _stream(rpc, job_id)
            elif args.wait:  # stdout is one JSON document (it names the job); progress goes to stderr
                job = await rpc.wait_job(job_id, progress=lambda s: print(s, file=sys.stderr))
                _print(job)
            else:
                print(job_id)
        elif args.job_command == "proof":
            proof = await rpc.job_proof(args.job_id)
            text = json.dumps(proof, indent=2) + "\n"
            if args.out is None:
                sys.stdout.write(text)
            else:
                args.out.write_text(text)
                print(f"wrote {args.out}; check it offline: aitbc job verify {args.out}", file=sys.stderr)
        elif args.job_command == "status":
            _print(await rpc.job(args.job_id))
        elif args.job_command == "result":
            result = await rpc.job_result(args.job_id)
            if args.image is not None:
                image = result_image(result)
                if image is None:
                    raise ConfigError(f"job {args.job_id} has no image in its result")
                args.image.write_bytes(image)
                print(f"wrote {len(image):,} bytes to {args.image}", file=sys.stderr)
                # the image is in the file: the JSON keeps its digests, not its bytes twice in hex
                result = {**result, "output": {**result["output"], "image": str(args.image)}, "output_hex": None}
            _print(result)
        elif args.job_command == "cancel":
            _print(await rpc.cancel_job(args.job_id))


async def _stream(rpc: RpcClient, job_id: str) -> None:
    """``job submit --stream``: the workload's output on stdout as it is made (an llm_gen
    token, an echo chunk), other progress and each status change on stderr.

    Raises:
        AitbcError: the job did not settle (after its events are shown).
    """
    last = ""
    async with aclosing(rpc.stream_job(job_id)) as events:
        async for event in events:
            data = event["data"]
            if event["event"] == "progress":
                if isinstance(data.get("token"), str):
                    sys.stdout.write(data["token"])
                    sys.stdout.flush()
                else:
                    print(json.dumps(data), file=sys.stderr)
            elif data["status"] != last:
                last = data["status"]
                print(f"job {job_id[:16]}: {last}", file=sys.stderr)
    print()
    if last != "settled":
        raise AitbcError(f"job {job_id} ended {last}: {data.get('error') or 'see aitbc job status'}")


async def _chain_cmd(args: argparse.Namespace) -> None:
    async with _rpc(args) as rpc:
        if args.chain_command == "status":
            _print(await rpc.status())
        elif args.chain_command == "supply":
            _print(await rpc.supply())
        elif args.chain_command == "providers":
            _print(await rpc.providers())


def _devnet_cmd(args: argparse.Namespace) -> None:
    if args.devnet_command == "up":
        procs = devnet.start(args.nodes_dir, args.run_dir, tiny_llm=args.tiny_llm, tiny_sd=args.tiny_sd)
        trio.run(lambda: devnet.wait_ready(procs))
        for p in procs:
            info = p.info()
            print(f"{p.name}: {info['address']}  rpc {info['rpc_url']}  log {p.log}")
        print("devnet up; use 'aitbc --devnet ...' to talk to peer1, 'aitbc devnet down' to stop")
        first = procs[0]
        print(f"dashboard: {first.info()['rpc_url']}/ui/  (sign in with the token in {first.data_dir / 'rpc.token'})")
    elif args.devnet_command == "down":
        for line in devnet.stop(args.run_dir) or ["no devnet running"]:
            print(line)
    elif args.devnet_command == "demo":
        trio.run(partial(devnet.run_demo, args.nodes_dir, args.run_dir, workload=args.workload, prompt=args.prompt))


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes. On the top parser they carry the defaults; on
    each subcommand they default to SUPPRESS, so one written after the subcommand
    (``aitbc devnet up --nodes-dir X``) counts as much as one written before it."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument("--rpc", default=default(None), help=f"peer RPC URL (default {DEFAULT_RPC}, env AITBC_RPC)")
    parser.add_argument("--token-file", default=default(None), help="RPC token file (env AITBC_RPC_TOKEN_FILE)")
    parser.add_argument(
        "--data-dir",
        default=default(None),
        help="peer data directory: its node.json gives the RPC URL, rpc.token the token",
    )
    parser.add_argument(
        "--wallet", default=default(None), help="wallet key file (default ~/.aitbc/wallets/default.json)"
    )
    parser.add_argument(
        "--devnet",
        action="store_true",
        default=default(False),
        help="talk to peer1 of the local devnet with the client wallet",
    )
    parser.add_argument(
        "--nodes-dir", type=Path, default=default(DEFAULT_NODES), help="devnet configs (default nodes/devnet)"
    )
    parser.add_argument(
        "--run-dir", type=Path, default=default(DEFAULT_RUN), help="devnet run directory (default .devnet)"
    )


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommand parsers that take the global options too (see :func:`_global_options`)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        parser.register("action", "parsers", _Commands)
        _global_options(parser, top=False)
        return parser


EPILOG = f"""The wallet's password comes from {PASSWORD_ENV} or, on a terminal, a prompt; only commands
that sign (send, job submit) need it. Options may stand before or after the subcommand."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aitbc", description="AITBC wallet, jobs, chain and devnet.", epilog=EPILOG)
    parser.register("action", "parsers", _Commands)
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    wallet = sub.add_parser("wallet", help="keys, balance, payments").add_subparsers(
        dest="wallet_command", required=True
    )
    wallet.add_parser("new", help="create an encrypted wallet key file")
    wallet.add_parser("address", help="print the wallet's address")
    wallet.add_parser("balance", help="balance and nonce")
    send = wallet.add_parser("send", help="transfer AITBC: send AMOUNT ADDRESS")
    send.add_argument("amount", help="AITBC, e.g. 50 or 0.25")
    send.add_argument("to", help="recipient aitbc1... address")
    send.add_argument("--wait", action="store_true", help="wait until committed")
    hist = wallet.add_parser("history", help="committed transactions, newest first")
    hist.add_argument("--limit", type=int, default=20)

    job = sub.add_parser("job", help="submit and follow compute jobs").add_subparsers(dest="job_command", required=True)
    submit = job.add_parser("submit", help="offer a job, pick a bid, open escrow")
    submit.add_argument("--workload", default="echo", help="echo | torch_bench | ...")
    submit.add_argument("--message", help="echo's message")
    submit.add_argument("--prompt", help="prompt for text-generation workloads")
    submit.add_argument(
        "--param",
        action="append",
        help="extra parameter NAME=VALUE, VALUE as JSON (7, true, [\"a\",\"b\"]) or plain text",
    )
    submit.add_argument("--max-price", default="5", help="most AITBC to pay (default 5)")
    submit.add_argument("--max-runtime", type=_positive_int, default=60, help="runtime cap in seconds (at least 1)")
    submit.add_argument(
        "--verify",
        choices=[str(level) for level in Level],
        default="none",
        help="what this peer checks before it pays: none, or spot (echo, torch_bench; specs/market.md)",
    )
    submit.add_argument("--wait", action="store_true", help="wait until settled, refunded or failed")
    submit.add_argument(
        "--stream", action="store_true", help="show the output as it is made (tokens on stdout), until the job ends"
    )
    proof = job.add_parser("proof", help="the job's receipt proof, to keep and check offline")
    proof.add_argument("job_id")
    proof.add_argument("-o", "--out", type=Path, metavar="FILE", help="write it to FILE (default: stdout)")
    verify = job.add_parser("verify", help="check a saved receipt proof offline (no peer needed)")
    verify.add_argument("file", type=Path)
    verify.add_argument(
        "--genesis", type=Path, help="the chain's genesis.json (default with --devnet: the devnet's)"
    )
    job.add_parser("status").add_argument("job_id")
    result = job.add_parser("result", help="the job's result (bytes as hex)")
    result.add_argument("job_id")
    result.add_argument("--image", type=Path, metavar="FILE", help="write an sd_infer result's PNG to FILE")
    cancel = job.add_parser("cancel", help="take a job back: its escrow returns (at once with the provider's release)")
    cancel.add_argument("job_id")

    chain = sub.add_parser("chain", help="chain and peer status").add_subparsers(dest="chain_command", required=True)
    chain.add_parser("status")
    chain.add_parser("supply")
    chain.add_parser("providers")

    dev = sub.add_parser("devnet", help="local 3-peer devnet").add_subparsers(dest="devnet_command", required=True)
    up = dev.add_parser("up", help="start the peers in the background")
    up.add_argument("--tiny-llm", action="store_true", help="build a tiny LM so the provider offers llm_gen")
    up.add_argument(
        "--tiny-sd", action="store_true", help="build a tiny Stable Diffusion pipeline so the provider offers sd_infer"
    )
    dev.add_parser("down", help="stop them")
    demo = dev.add_parser("demo", help="start, run one job end to end, print the outcome, stop")
    demo.add_argument(
        "--workload", help="echo | torch_bench | embed | llm_gen | sd_infer (default: torch_bench if offered)"
    )
    demo.add_argument("--prompt", help="llm_gen's or sd_infer's prompt (or echo's message)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "devnet":
            _devnet_cmd(args)
        elif args.command == "wallet":
            trio.run(_wallet_cmd, args)
        elif args.command == "job" and args.job_command == "verify":
            _verify_proof(args)
        elif args.command == "job":
            trio.run(_job_cmd, args)
        elif args.command == "chain":
            trio.run(_chain_cmd, args)
    except RpcError as e:
        print(f"aitbc: {e.code}: {e.message}", file=sys.stderr)
        if e.details:
            print(json.dumps(e.details, indent=2), file=sys.stderr)
        return 1
    except (AitbcError, ValueError, OSError) as e:
        print(f"aitbc: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
