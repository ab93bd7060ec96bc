"""A third-party Modbus peer for Xiaoan's driver tests: Debian's pymodbus (3.0) serving a known
register image over TCP or RTU. Each unit N has:
  input registers   IR[i] = 100*N + i          (250 registers, addresses 0-249)
  holding registers HR[i] = 1000 + i           (9 registers, addresses 0-8: address 9 is exception 2)
  discrete inputs   DI[0] = True, others False (16 bits)
  coils             all False                  (16 bits)
Usage: pymodbus_peer.py tcp PORT UNITS   |   pymodbus_peer.py rtu DEVICE BAUD UNITS
UNITS is a comma list, e.g. 1,2. A unit not in the list gets no reply at all (a silent slave).
Prints READY on stdout when it serves.
"""
import asyncio
import logging
import sys

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer
from pymodbus.transaction import ModbusRtuFramer

logging.basicConfig(level=logging.CRITICAL)


def context(units):
    slaves = {}
    for n in units:
        slaves[n] = ModbusSlaveContext(
            di=ModbusSequentialDataBlock(0, [True] + [False] * 15),
            co=ModbusSequentialDataBlock(0, [False] * 16),
            ir=ModbusSequentialDataBlock(0, [100 * n + i for i in range(250)]),
            hr=ModbusSequentialDataBlock(0, [1000 + i for i in range(9)]),
            zero_mode=True,
        )
    return ModbusServerContext(slaves=slaves, single=False)


async def main():
    kind = sys.argv[1]
    if kind == "tcp":
        port, units = int(sys.argv[2]), [int(u) for u in sys.argv[3].split(",")]
        server = await StartAsyncTcpServer(context(units), address=("127.0.0.1", port), defer_start=True)
        print("READY", flush=True)
        await server.serve_forever()
    else:
        device, baud, units = sys.argv[2], int(sys.argv[3]), [int(u) for u in sys.argv[4].split(",")]
        server = await StartAsyncSerialServer(
            context(units), framer=ModbusRtuFramer, port=device, baudrate=baud, defer_start=True
        )
        await server.start()
        print("READY", flush=True)
        await server.serve_forever()


asyncio.run(main())
