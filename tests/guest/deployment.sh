#!/bin/sh
# SCENARIO.md's deployment inside one guest, in namespaces of the guest.
# tests/tests/deployment.rs sources this file and calls its functions.
#
#  ns lan               ns gw (br-daemon, IPsec)      ns wan          ns vpn (VPC's VPN gateway)  ns ce1, ce2
#  lan0 ───────────── gw-lan [XDP] gw-wan [XDP] ── wan-gw  wan-vpn ── vpn-wan  vpcbr 10.96.0.1/16 ── eth0 + sit1
#  2001:db8:0:100:      2001:db8:0:f013::110/64   (bridge wanbr:                                  10.96.1.100 / .101
#  5054:1cff:fe93:3ea8  2001:db8:0:100::1/64       the wire)   192.0.2.1 ─ 192.0.2.2
#                       BR 10.255.255.222 on br6rd0 (TUN)
#
# The capture is on the wire (ns wan), where nothing but the wire's frames
# pass: on vpn-wan, tcpdump would also see the plaintext that vpn's own
# kernel re-injects after decrypting ESP, and on gw-wan it would miss the
# frames the XDP fast path redirects.
#
# IPsec between 192.0.2.1 and 192.0.2.2 carries 10.255.255.222 <-> 10.96.0.0/16
# (ESP tunnel mode, static keys). The VPN gateway's side is policy-based in
# every mode and drops what arrives in plaintext from the BR; the gateway's
# side is one of: none, policy, table220, xfrmi, vti.

IP=/usr/bin/ip
nsx() { ns=$1; shift; $IP netns exec "$ns" "$@"; }

LAN_SERVER=2001:db8:0:100:5054:1cff:fe93:3ea8
BR_V4=10.255.255.222
GW_WAN=192.0.2.1
VPN_WAN=192.0.2.2
VPC=10.96.0.0/16
ENC_KEY=0x0123456789abcdef0123456789abcdef
AUTH_KEY=0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
# Small enough that a 1280-byte IPv6 packet in ESP does not fit: the
# kernel fragments the inner IPv4 packet (DF is never set) before ESP.
WAN_MTU=${WAN_MTU:-1350}

veth() { $IP link add "$2" netns "$1" type veth peer "$4" netns "$3"; }

topology() {
	for ns in lan gw wan vpn ce1 ce2; do
		$IP netns add $ns
		nsx $ns $IP link set lo up
		nsx $ns sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	done
	veth lan lan0 gw gw-lan
	veth gw gw-wan wan wan-gw
	veth vpn vpn-wan wan wan-vpn
	veth ce1 eth0 vpn vpn-ce1
	veth ce2 eth0 vpn vpn-ce2
	# veth leaves checksums to hardware that does not exist; a frame copied
	# to AF_XDP would carry the partial sum. GRO on the gateway's peers
	# lets its veths take frames the XDP fast path redirects.
	for pair in lan:lan0 gw:gw-lan gw:gw-wan wan:wan-gw wan:wan-vpn vpn:vpn-wan ce1:eth0 ce2:eth0 vpn:vpn-ce1 vpn:vpn-ce2; do
		nsx ${pair%%:*} ethtool -K ${pair#*:} tx off >/dev/null 2>&1
	done
	# $1 = xdp: an XDP pass program there instead (on kernels before 6.3
	# the daemon can see that, not GRO).
	if [ "$1" = xdp ]; then
		nsx lan $IP link set dev lan0 xdpdrv obj /xdp_pass.o sec xdp program xdp_pass
		nsx wan $IP link set dev wan-gw xdpdrv obj /xdp_pass.o sec xdp program xdp_pass
	else
		nsx lan ethtool -K lan0 gro on >/dev/null
		nsx wan ethtool -K wan-gw gro on >/dev/null
	fi

	nsx wan $IP link add wanbr type bridge
	for p in wan-gw wan-vpn; do nsx wan $IP link set $p mtu $WAN_MTU master wanbr up; done
	nsx wan $IP link set wanbr up

	nsx lan $IP link set lan0 up
	nsx lan $IP -6 addr add $LAN_SERVER/64 dev lan0 nodad
	nsx lan $IP -6 route add default via 2001:db8:0:100::1

	nsx gw sysctl -qw net.ipv6.conf.all.forwarding=1 net.ipv4.ip_forward=1
	nsx gw $IP link set gw-lan up
	nsx gw $IP link set gw-wan mtu $WAN_MTU up
	nsx gw $IP -6 addr add 2001:db8:0:f013::110/64 dev gw-lan nodad
	nsx gw $IP -6 addr add 2001:db8:0:100::1/64 dev gw-lan nodad
	nsx gw $IP -4 addr add $GW_WAN/24 dev gw-wan

	nsx vpn sysctl -qw net.ipv4.ip_forward=1
	nsx vpn $IP link set vpn-wan mtu $WAN_MTU up
	nsx vpn $IP -4 addr add $VPN_WAN/24 dev vpn-wan
	nsx vpn $IP link add vpcbr type bridge
	nsx vpn $IP link set vpcbr up
	for p in vpn-ce1 vpn-ce2; do nsx vpn $IP link set $p master vpcbr up; done
	nsx vpn $IP -4 addr add 10.96.0.1/16 dev vpcbr
	nsx vpn $IP -4 route add $BR_V4/32 via $GW_WAN

	for ce in ce1:10.96.1.100 ce2:10.96.1.101; do
		nsx ${ce%%:*} $IP link set eth0 up
		nsx ${ce%%:*} $IP -4 addr add ${ce#*:}/16 dev eth0
		nsx ${ce%%:*} $IP -4 route add default via 10.96.0.1
	done
	# CE 1 exactly as SCENARIO.md (ifcfg-sit1 + rc.local).
	nsx ce1 $IP tunnel add sit1 mode sit local 10.96.1.100 ttl 64
	nsx ce1 $IP tunnel 6rd dev sit1 6rd-prefix 2001:db8:0:f096::/64 6rd-relay_prefix 10.96.1.100/32
	nsx ce1 $IP link set sit1 mtu 1280 up
	nsx ce1 $IP -6 addr add 2001:db8:0:f096:0a60:0164::1/96 dev sit1
	nsx ce1 $IP -6 route add default via ::10.255.255.222 dev sit1 metric 1
}

# ESP states: $1 extra arguments (if_id for an xfrm interface).
states() {
	for side in gw:$GW_WAN:$VPN_WAN vpn:$VPN_WAN:$GW_WAN; do
		ns=${side%%:*}; rest=${side#*:}; me=${rest%%:*}; peer=${rest#*:}
		extra=""
		[ $ns = gw ] && extra="$1"
		nsx $ns $IP xfrm state add src $me dst $peer proto esp spi 0x$(spi $me) reqid 1 mode tunnel \
			enc 'cbc(aes)' $ENC_KEY auth-trunc 'hmac(sha256)' $AUTH_KEY 128 $extra
		nsx $ns $IP xfrm state add src $peer dst $me proto esp spi 0x$(spi $peer) reqid 1 mode tunnel \
			enc 'cbc(aes)' $ENC_KEY auth-trunc 'hmac(sha256)' $AUTH_KEY 128 $extra
	done
}
spi() { [ "$1" = $GW_WAN ] && echo 1001 || echo 1002; }

# Policies of one side: ns, local selector, remote selector, local and
# remote tunnel ends, extra arguments (if_id, mark).
policies() {
	ns=$1; here=$2; there=$3; me=$4; peer=$5; extra=$6
	nsx $ns $IP xfrm policy add dir out src $here dst $there $extra \
		tmpl src $me dst $peer proto esp reqid 1 mode tunnel
	for dir in in fwd; do
		nsx $ns $IP xfrm policy add dir $dir src $there dst $here $extra \
			tmpl src $peer dst $me proto esp reqid 1 mode tunnel
	done
}

# The VPC side, the same in every IPsec mode: policy-based, and what
# reaches it in plaintext from the BR is dropped by its policies.
vpc_side() {
	policies vpn $VPC $BR_V4/32 $VPN_WAN $GW_WAN ""
}

mode_setup() {
	case $1 in
	none)
		nsx gw $IP route add $VPC via $VPN_WAN dev gw-wan
		;;
	policy)
		states ""
		vpc_side
		policies gw $BR_V4/32 $VPC $GW_WAN $VPN_WAN ""
		nsx gw $IP route add $VPC via $VPN_WAN dev gw-wan
		;;
	table220)
		# strongSwan's own routing: table 220 behind a rule, nothing in main.
		states ""
		vpc_side
		policies gw $BR_V4/32 $VPC $GW_WAN $VPN_WAN ""
		nsx gw $IP rule add pref 220 lookup 220
		nsx gw $IP route add $VPC via $VPN_WAN dev gw-wan proto static src $BR_V4 table 220 2>/dev/null ||
			nsx gw $IP route add $VPC via $VPN_WAN dev gw-wan proto static table 220
		;;
	xfrmi)
		states "if_id 7"
		vpc_side
		policies gw $BR_V4/32 $VPC $GW_WAN $VPN_WAN "if_id 7"
		nsx gw $IP link add ipsec0 type xfrm dev gw-wan if_id 7
		nsx gw $IP link set ipsec0 up
		nsx gw $IP route add $VPC dev ipsec0
		;;
	vti)
		states ""
		vpc_side
		policies gw $BR_V4/32 $VPC $GW_WAN $VPN_WAN "mark 42"
		nsx gw $IP link add vti0 type vti local $GW_WAN remote $VPN_WAN key 42
		nsx gw sysctl -qw net.ipv4.conf.vti0.disable_policy=1
		nsx gw $IP link set vti0 up
		nsx gw $IP route add $VPC dev vti0
		;;
	*) echo "no mode $1"; return 1 ;;
	esac
}

mode_clear() {
	for ns in gw vpn; do
		nsx $ns $IP xfrm policy flush
		nsx $ns $IP xfrm state flush
	done
	nsx gw $IP route del $VPC 2>/dev/null
	nsx gw $IP route flush table 220 2>/dev/null
	nsx gw $IP rule del pref 220 2>/dev/null
	nsx gw $IP link del ipsec0 2>/dev/null
	nsx gw $IP link del vti0 2>/dev/null
	true
}

# br-daemon in ns gw; $1: xdp-fast-path (true or false).
daemon_start() {
	cat > /tmp/br.toml <<EOF
[relay]
interfaces = ["gw-lan", "gw-wan"]
# The CEs are behind gw-wan; with route-based IPsec their decrypted
# protocol 41 arrives on the xfrm or VTI interface.
ce-interfaces = ["gw-wan", "ipsec0", "vti0"]
queues = 1
metrics = "127.0.0.1:9641"
xdp-fast-path = $1

[[domain]]
name = "vpc"
prefix = "2001:db8:0:f096::/64"
ipv4-mask-len = 0
br-ipv4 = "$BR_V4"
EOF
	# Not through nsx: $! must be the daemon (ip netns exec and setpriv
	# exec it). $2: the only capabilities it gets (+net_admin,+bpf,...):
	# uid 0 keeps no others once the bounding set is cut.
	$IP netns exec gw setpriv --bounding-set=-all,$2 --inh-caps=-all,$2 --ambient-caps=-all,$2 \
		br-daemon run --config /tmp/br.toml > /tmp/daemon.log 2>&1 < /dev/null &
	echo $! > /tmp/daemon.pid
	for i in $(seq 1 100); do
		metrics >/dev/null 2>&1 && grep CapEff /proc/$(cat /tmp/daemon.pid)/status >> /tmp/daemon.log && return 0
		sleep 0.2
	done
	cat /tmp/daemon.log
	return 1
}

metrics() { nsx gw wget -q -O - http://127.0.0.1:9641/metrics; }

daemon_stop() {
	pid=$(cat /tmp/daemon.pid)
	kill -TERM $pid
	for i in $(seq 1 150); do
		kill -0 $pid 2>/dev/null || break
		sleep 0.1
	done
	cat /tmp/daemon.log
	if kill -0 $pid 2>/dev/null; then
		kill -9 $pid
		echo "br-daemon did not stop on SIGTERM"
		return 1
	fi
}

# Everything on the gateway's WAN link, captured on the wire.
capture_start() {
	rm -f /tmp/wan.pcap
	$IP netns exec wan tcpdump -i wan-gw -n -s 96 -U -w /tmp/wan.pcap > /tmp/tcpdump.log 2>&1 < /dev/null &
	echo $! > /tmp/tcpdump.pid
	for i in $(seq 1 50); do
		grep -q listening /tmp/tcpdump.log && return 0
		sleep 0.1
	done
	cat /tmp/tcpdump.log
	return 1
}

# Prints "proto41 N esp M": plaintext protocol-41 packets and ESP packets
# that crossed the WAN link, either way.
capture_stop() {
	sleep 0.5
	kill -INT $(cat /tmp/tcpdump.pid)
	sleep 0.5
	echo "proto41 $(tcpdump -r /tmp/wan.pcap -n 'ip proto 41' 2>/dev/null | wc -l) esp $(tcpdump -r /tmp/wan.pcap -n 'ip proto 50' 2>/dev/null | wc -l)"
}

# 1 MiB from namespace $1 to [$2]:$3 (listening in namespace $4); prints
# both MD5 sums.
transfer() {
	dd if=/dev/urandom of=/tmp/send bs=1024 count=1024 2>/dev/null
	rm -f /tmp/recv
	# Busybox nc closes at the end of its stdin: keep the listener's open
	# (and not the guest's console, whose next lines are the test's).
	(sleep 60 | $IP netns exec $4 nc -l -p $3 > /tmp/recv) &
	sleep 0.5
	nsx $1 nc -w 20 $2 $3 < /tmp/send
	for i in $(seq 1 100); do
		[ "$(wc -c < /tmp/recv)" -ge 1048576 ] && break
		sleep 0.2
	done
	pkill -f "nc -l -p $3" 2>/dev/null
	echo "sent $(md5sum < /tmp/send | cut -d' ' -f1) received $(md5sum < /tmp/recv | cut -d' ' -f1) bytes $(wc -c < /tmp/recv)"
}
