"""Sans-IO DHCP (RFC 2131/2132, PXE, iPXE): the packet codec and the responder's decisions."""

from oneroot.model.cluster import DhcpMode
from oneroot.proto.dhcp.config import NetworkConfig, NodeBoot
from oneroot.proto.dhcp.lease import Lease, LeaseAction, LeaseChange, LeaseState, LeaseView
from oneroot.proto.dhcp.options import (
    BROADCAST_FLAG,
    CLIENT_PORT,
    PXE_PORT,
    SERVER_PORT,
    BootOp,
    ClientArch,
    DhcpOptions,
    IpxeSubOption,
    MessageType,
    OptionCode,
    PxeSubOption,
    decode_suboptions,
    encode_suboptions,
)
from oneroot.proto.dhcp.packet import DhcpPacket, parse_packet
from oneroot.proto.dhcp.responder import (
    DECLINE_HOLD,
    OFFER_HOLD,
    Decision,
    Destination,
    NoLeases,
    ReplyEvent,
    UnknownClient,
    boot_file,
    claim_lost_nak,
    respond,
)

__all__ = [
    "BROADCAST_FLAG",
    "CLIENT_PORT",
    "DECLINE_HOLD",
    "OFFER_HOLD",
    "PXE_PORT",
    "SERVER_PORT",
    "BootOp",
    "ClientArch",
    "Decision",
    "Destination",
    "DhcpMode",
    "DhcpOptions",
    "DhcpPacket",
    "IpxeSubOption",
    "Lease",
    "LeaseAction",
    "LeaseChange",
    "LeaseState",
    "LeaseView",
    "MessageType",
    "NetworkConfig",
    "NoLeases",
    "NodeBoot",
    "OptionCode",
    "PxeSubOption",
    "ReplyEvent",
    "UnknownClient",
    "boot_file",
    "claim_lost_nak",
    "decode_suboptions",
    "encode_suboptions",
    "parse_packet",
    "respond",
]
