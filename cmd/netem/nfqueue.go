package main

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
)

// The nfnetlink_queue protocol, from the kernel's uapi
// include/uapi/linux/netfilter/nfnetlink_queue.h and linux/netfilter.h.
const (
	// enum nfqnl_msg_types
	nfqnlMsgPacket  netfilter.MessageType = 0 // NFQNL_MSG_PACKET: kernel → user
	nfqnlMsgVerdict netfilter.MessageType = 1 // NFQNL_MSG_VERDICT: user → kernel
	nfqnlMsgConfig  netfilter.MessageType = 2 // NFQNL_MSG_CONFIG

	// enum nfqnl_attr_type
	nfqaPacketHdr  uint16 = 1 // NFQA_PACKET_HDR: struct nfqnl_msg_packet_hdr
	nfqaVerdictHdr uint16 = 2 // NFQA_VERDICT_HDR: struct nfqnl_msg_verdict_hdr

	// enum nfqnl_attr_config
	nfqaCfgCmd         uint16 = 1 // NFQA_CFG_CMD: struct nfqnl_msg_config_cmd
	nfqaCfgParams      uint16 = 2 // NFQA_CFG_PARAMS: struct nfqnl_msg_config_params
	nfqaCfgQueueMaxlen uint16 = 3 // NFQA_CFG_QUEUE_MAXLEN: __be32
	nfqaCfgMask        uint16 = 4 // NFQA_CFG_MASK: __be32, the flags to change
	nfqaCfgFlags       uint16 = 5 // NFQA_CFG_FLAGS: __be32, their values

	// enum nfqnl_msg_config_cmds
	nfqnlCfgCmdBind   uint8 = 1 // NFQNL_CFG_CMD_BIND
	nfqnlCfgCmdUnbind uint8 = 2 // NFQNL_CFG_CMD_UNBIND

	// enum nfqnl_config_mode
	nfqnlCopyMeta uint8 = 1 // NFQNL_COPY_META: metadata only, no payload

	// NFQA_CFG_F_FAIL_OPEN: accept packets instead of dropping them when the
	// queue (or the socket's receive buffer) is full.
	nfqaCfgFFailOpen uint32 = 1 << 0

	// Verdicts (linux/netfilter.h).
	nfDrop   uint32 = 0 // NF_DROP
	nfAccept uint32 = 1 // NF_ACCEPT
)

// packetHdr is struct nfqnl_msg_packet_hdr (packed, 7 bytes).
type packetHdr struct {
	ID         uint32 // packet_id, unique in the queue
	HWProtocol uint16 // hw_protocol, e.g. 0x0800 for IPv4
	Hook       uint8  // netfilter hook
}

const packetHdrLen = 7

// queueHeader is the netfilter (nfgenmsg) header of every message to queue q.
func queueHeader(t netfilter.MessageType, q uint16, flags netlink.HeaderFlags) netfilter.Header {
	return netfilter.Header{
		SubsystemID: netfilter.NFSubsysQueue,
		MessageType: t,
		Family:      netfilter.ProtoUnspec,
		Version:     0, // NFNETLINK_V0
		ResourceID:  q, // the queue number, big endian on the wire
		Flags:       flags,
	}
}

// encodeVerdict is the NFQNL_MSG_VERDICT message for packet id of queue q. It
// asks for no acknowledgement: a verdict that fails comes back as an error.
func encodeVerdict(q uint16, id, verdict uint32) (netlink.Message, error) {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b[0:4], verdict)
	binary.BigEndian.PutUint32(b[4:8], id)
	return netfilter.MarshalNetlink(queueHeader(nfqnlMsgVerdict, q, netlink.Request),
		[]netfilter.Attribute{{Type: nfqaVerdictHdr, Data: b}})
}

// decodeVerdict is the inverse of encodeVerdict (used by the tests).
func decodeVerdict(m netlink.Message) (q uint16, id, verdict uint32, err error) {
	h, attrs, err := netfilter.UnmarshalNetlink(m)
	if err != nil {
		return 0, 0, 0, err
	}
	if h.SubsystemID != netfilter.NFSubsysQueue || h.MessageType != nfqnlMsgVerdict {
		return 0, 0, 0, fmt.Errorf("not a queue verdict: %v", h)
	}
	for _, a := range attrs {
		if a.Type == nfqaVerdictHdr && len(a.Data) >= 8 {
			return h.ResourceID, binary.BigEndian.Uint32(a.Data[4:8]), binary.BigEndian.Uint32(a.Data[0:4]), nil
		}
	}
	return 0, 0, 0, errors.New("verdict without NFQA_VERDICT_HDR")
}

// encodeBind is the NFQNL_MSG_CONFIG message that binds queue q to this
// socket, copying metadata only, with queue length maxlen and fail-open set.
// It asks for an acknowledgement.
func encodeBind(q uint16, maxlen uint32) (netlink.Message, error) {
	params := make([]byte, 5) // struct nfqnl_msg_config_params, packed
	binary.BigEndian.PutUint32(params[0:4], 0)
	params[4] = nfqnlCopyMeta
	return netfilter.MarshalNetlink(queueHeader(nfqnlMsgConfig, q, netlink.Request|netlink.Acknowledge),
		[]netfilter.Attribute{
			{Type: nfqaCfgCmd, Data: configCmd(nfqnlCfgCmdBind)},
			{Type: nfqaCfgParams, Data: params},
			{Type: nfqaCfgQueueMaxlen, Data: netfilter.Uint32Bytes(maxlen)},
			{Type: nfqaCfgMask, Data: netfilter.Uint32Bytes(nfqaCfgFFailOpen)},
			{Type: nfqaCfgFlags, Data: netfilter.Uint32Bytes(nfqaCfgFFailOpen)},
		})
}

// encodeUnbind is the NFQNL_MSG_CONFIG message that unbinds queue q. No
// acknowledgement: it is the last thing the program sends.
func encodeUnbind(q uint16) (netlink.Message, error) {
	return netfilter.MarshalNetlink(queueHeader(nfqnlMsgConfig, q, netlink.Request),
		[]netfilter.Attribute{{Type: nfqaCfgCmd, Data: configCmd(nfqnlCfgCmdUnbind)}})
}

// configCmd is struct nfqnl_msg_config_cmd {u8 command; u8 pad; be16 pf}.
func configCmd(cmd uint8) []byte { return []byte{cmd, 0, 0, 0} }

// errNotPacket says a message is something other than a queued packet.
var errNotPacket = errors.New("not a queued packet")

// decodePacket reads the queue number and packet header of an
// NFQNL_MSG_PACKET message.
func decodePacket(m netlink.Message) (q uint16, p packetHdr, err error) {
	h, attrs, err := netfilter.UnmarshalNetlink(m)
	if err != nil {
		return 0, p, err
	}
	if h.SubsystemID != netfilter.NFSubsysQueue || h.MessageType != nfqnlMsgPacket {
		return 0, p, errNotPacket
	}
	for _, a := range attrs {
		if a.Type == nfqaPacketHdr {
			if len(a.Data) < packetHdrLen {
				return 0, p, fmt.Errorf("NFQA_PACKET_HDR of %d bytes", len(a.Data))
			}
			p.ID = binary.BigEndian.Uint32(a.Data[0:4])
			p.HWProtocol = binary.BigEndian.Uint16(a.Data[4:6])
			p.Hook = a.Data[6]
			return h.ResourceID, p, nil
		}
	}
	return 0, p, errors.New("queued packet without NFQA_PACKET_HDR")
}

// encodePacket builds an NFQNL_MSG_PACKET as the kernel sends it (for the
// tests).
func encodePacket(q uint16, p packetHdr) (netlink.Message, error) {
	b := make([]byte, packetHdrLen)
	binary.BigEndian.PutUint32(b[0:4], p.ID)
	binary.BigEndian.PutUint16(b[4:6], p.HWProtocol)
	b[6] = p.Hook
	return netfilter.MarshalNetlink(queueHeader(nfqnlMsgPacket, q, 0),
		[]netfilter.Attribute{{Type: nfqaPacketHdr, Data: b}})
}
