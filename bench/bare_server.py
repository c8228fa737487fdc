"""The ceiling: a bare aiosmtpd server that accepts every message and discards it.

Started by the benchmark as its own process, with the same aiosmtpd settings as
Postdesk's listener (``gateway.smtp_server.make_server_factory``): same SIZE limit,
SMTPUTF8, undecoded data. Its only work per message is the SMTP dialogue itself.

    python bench/bare_server.py --port 2600 --data-size-limit 26214400
"""
from __future__ import annotations

import argparse
import asyncio
import signal

from aiosmtpd.smtp import SMTP


class DiscardHandler:
    async def handle_DATA(self, server, session, envelope) -> str:
        return "250 OK"


async def serve(host: str, port: int, data_size_limit: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    handler = DiscardHandler()

    def factory() -> SMTP:
        return SMTP(handler, data_size_limit=data_size_limit, enable_SMTPUTF8=True, decode_data=False,
                    hostname="bare.example", ident="bare aiosmtpd")

    server = await loop.create_server(factory, host, port)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-size-limit", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.data_size_limit))


if __name__ == "__main__":
    main()
