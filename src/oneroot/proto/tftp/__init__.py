"""Sans-IO TFTP: the packet codec, option negotiation and the server's read-transfer machine.

No sockets, clocks or logging here: `oneroot.serve.tftp` owns those and feeds this package
datagrams and times.
"""

from oneroot.proto.tftp.options import Negotiated, blksize_for_mtu, negotiate
from oneroot.proto.tftp.packets import (
    Ack,
    Data,
    Error,
    ErrorCode,
    Opcode,
    OptionAck,
    Packet,
    ReadRequest,
    WriteRequest,
    parse_packet,
)
from oneroot.proto.tftp.source import (
    BytesSource,
    FileObjectSource,
    FileSource,
    NetasciiSource,
    to_netascii,
)
from oneroot.proto.tftp.transfer import (
    Action,
    Failed,
    Finished,
    ReadTransfer,
    SendDatagram,
    SetTimer,
    TransferConfig,
    TransferStats,
)

__all__ = [
    "Ack",
    "Action",
    "BytesSource",
    "Data",
    "Error",
    "ErrorCode",
    "Failed",
    "FileObjectSource",
    "FileSource",
    "Finished",
    "Negotiated",
    "NetasciiSource",
    "Opcode",
    "OptionAck",
    "Packet",
    "ReadRequest",
    "ReadTransfer",
    "SendDatagram",
    "SetTimer",
    "TransferConfig",
    "TransferStats",
    "WriteRequest",
    "blksize_for_mtu",
    "negotiate",
    "parse_packet",
    "to_netascii",
]
