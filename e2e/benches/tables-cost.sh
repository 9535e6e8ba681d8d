#!/usr/bin/env bash
# What each of weft's nftables tables costs a pod-to-pod flow, part by part, on the kernel's
# reference datapath (shared/reference/datapath-reference.sh), and what a conntrack bypass for
# pod-to-pod traffic would win back. A measurement for docs/benchmarks.md ("What the tables cost,
# part by part"), not a test: it changes nothing in weft.
#
#   bash e2e/benches/tables-cost.sh [vxlan|hostgw] [rounds]      (as root; about 8 min per backend)
#
# The configurations, loaded into both node namespaces, round-robin within each round:
#   none     no nftables at all (the reference)
#   nat      weft-nat's masquerade chain (so conntrack on every packet) and, with VXLAN, weft-raw
#   today    nat + weft-policy's forward chain as it starts (`ct state established,related accept`
#            first) on the forward hook: what a weft node holds while the cluster has a policy
#            object (and, before 821d6b4, always)
#   bypass   today + one raw-priority rule that untracks pod-to-pod packets whose ends are not in
#            a set of tracked addresses (empty here, so the rule matches every pod pair): the
#            cheapest form of a Calico-style NOTRACK for pods that no policy selects
#   kp       kube-proxy's own table alone (nftables mode, as kube-proxy renders it with the one
#            `kubernetes` Service: its nat hooks turn conntrack on too), i.e. a node without weft
#   kpnat    kp + nat: a weft node beside kube-proxy while the cluster has no policy object
# The tables are written in the shape weft renders them (node k's subnet 10.244.k.0/24, the pod
# network 10.244.0.0/16, the nodes 192.0.2.1-2), not taken from a running agent: the overlay bench's
# "reference+tables" path does that, with weft's exact tables.
#
# Each sample: sockperf 64-byte UDP (messages/s sent, 3 s) and sockperf TCP ping-pong (RTT, 3 s),
# client on CPU 0, server on CPU 1. Prints the median, min and max of each and its ratio to `none`.
set -euo pipefail

MODE=${1:-vxlan}
ROUNDS=${2:-10}
case $MODE in vxlan | hostgw) ;; *) echo "usage: $0 [vxlan|hostgw] [rounds]" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "run as root (it builds network namespaces)" >&2; exit 1; }
for t in sockperf nft python3 taskset; do
  command -v "$t" >/dev/null || { echo "$t is missing: apt-get install sockperf nftables python3 util-linux" >&2; exit 1; }
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REF=${WEFT_REFERENCE_DIR:-$HERE/../../../shared/reference}/datapath-reference.sh
[ -f "$REF" ] || { echo "the reference script $REF is missing (set WEFT_REFERENCE_DIR)" >&2; exit 1; }

export PFX=wtc-
WORKDIR=$(mktemp -d /tmp/weft-tables-cost.XXXXXX)
export WORK=$WORKDIR/work RES=$WORKDIR/results
N1=${PFX}n1 N2=${PFX}n2 P1A=${PFX}p1a P2A=${PFX}p2a
UDP_PORT=11112 UDP_SERVER=

cleanup() {
  [ -n "$UDP_SERVER" ] && kill "$UDP_SERVER" 2>/dev/null || true
  bash "$REF" teardown >/dev/null 2>&1 || true
  rm -rf "$WORKDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nat_tables() { # node index
  cat <<EOF
table inet weft-nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00004000 == 0x00004000 return
		ip saddr 10.244.$1.0/24 ip daddr 10.244.0.0/16 return
		ip saddr 10.244.0.0/16 ip daddr 10.244.$1.0/24 return
		ip saddr != 10.244.0.0/16 ip daddr 10.244.$1.0/24 return
		ip saddr 10.244.0.0/16 ip daddr { 192.0.2.1, 192.0.2.2 } return
		ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade
		ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade
	}
}
EOF
  [ "$MODE" = vxlan ] && cat <<'EOF'
table inet weft-raw {
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		udp dport 8472 fib daddr type local notrack
	}
	chain output {
		type filter hook output priority raw; policy accept;
		udp dport 8472 notrack
	}
}
EOF
  return 0
}
policy_table() {
  cat <<'EOF'
table inet weft-policy {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		ct mark & 0x00010000 == 0x00010000 accept
	}
}
EOF
}
bypass_table() {
  cat <<'EOF'
table inet weft-bypass {
	set tracked-v4 { type ipv4_addr; }
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 ip saddr != @tracked-v4 ip daddr != @tracked-v4 notrack
	}
}
EOF
}
kube_proxy_table() { # node index: kube-proxy's table as it renders it in nftables mode with the
  # `kubernetes` Service only (dumped from the local cluster's node-1; addresses carried over)
  cat <<EOF
table ip kube-proxy {
	set cluster-ips { type ipv4_addr; elements = { 10.96.0.1 } }
	set nodeport-ips { type ipv4_addr; elements = { 192.0.2.$1 } }
	map no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; }
	map no-endpoint-nodeports { type inet_proto . inet_service : verdict; }
	map firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict; }
	map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }
	map service-nodeports { type inet_proto . inet_service : verdict; }
	chain mark-for-masquerade { meta mark set meta mark | 0x00004000; }
	chain reject-chain { reject; }
	chain nodeport-endpoints-check { ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports; }
	chain service-endpoints-check { ip daddr . meta l4proto . th dport vmap @no-endpoint-services; }
	chain firewall-check { ip daddr . meta l4proto . th dport vmap @firewall-ips; }
	chain cluster-ips-check {
		ip daddr @cluster-ips reject
		ip daddr 10.96.0.0/16 drop
	}
	chain masquerading {
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}
	chain endpoint-kubernetes {
		ip saddr 192.0.2.1 jump mark-for-masquerade
		meta l4proto tcp dnat to 192.0.2.1:6443
	}
	chain service-kubernetes {
		ip daddr 10.96.0.1 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 1 vmap { 0 : goto endpoint-kubernetes }
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
		ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
	}
	chain filter-prerouting-pre-dnat { type filter hook prerouting priority dstnat - 10; policy accept; ct state new jump firewall-check; }
	chain filter-output-pre-dnat { type filter hook output priority -110; policy accept; ct state new jump firewall-check; }
	chain filter-input {
		type filter hook input priority filter; policy accept;
		ct state new jump nodeport-endpoints-check
		ct state new jump service-endpoints-check
	}
	chain filter-forward {
		type filter hook forward priority filter; policy accept;
		ct state new jump service-endpoints-check
		ct state new jump cluster-ips-check
	}
	chain filter-output {
		type filter hook output priority filter; policy accept;
		ct state new jump service-endpoints-check
		ct state new jump cluster-ips-check
	}
	chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }
	chain nat-output { type nat hook output priority -100; policy accept; jump services; }
	chain nat-postrouting { type nat hook postrouting priority srcnat; policy accept; jump masquerading; }
}
add element ip kube-proxy service-ips { 10.96.0.1 . tcp . 443 : goto service-kubernetes }
EOF
}
load() { # config
  local n
  for n in 1 2; do
    ip netns exec "${PFX}n$n" nft flush ruleset
    case $1 in
      none) ;;
      nat) nat_tables $n | ip netns exec "${PFX}n$n" nft -f - ;;
      today) { nat_tables $n; policy_table; } | ip netns exec "${PFX}n$n" nft -f - ;;
      bypass) { nat_tables $n; policy_table; bypass_table; } | ip netns exec "${PFX}n$n" nft -f - ;;
      kp) kube_proxy_table $n | ip netns exec "${PFX}n$n" nft -f - ;;
      kpnat) { kube_proxy_table $n; nat_tables $n; } | ip netns exec "${PFX}n$n" nft -f - ;;
    esac
  done
}

echo "setting up the reference $MODE datapath (namespaces $PFX*)" >&2
bash "$REF" setup "$MODE" >/dev/null
ip netns exec "$P2A" taskset -c 1 sockperf sr -i 10.244.2.2 -p $UDP_PORT >/dev/null 2>&1 &
UDP_SERVER=$!
sleep 0.5

# The bypass must really keep the pods' flow out of conntrack (and `today` must not): checked with
# conntrack(8) where it is installed, before anything is measured.
tracked() { # config -> conntrack entries for the pod pair on node 1 and node 2 after a ping
  load "$1"
  ip netns exec "$N1" conntrack -F >/dev/null 2>&1; ip netns exec "$N2" conntrack -F >/dev/null 2>&1
  ip netns exec "$P1A" ping -c 2 -i 0.2 -q 10.244.2.2 >/dev/null
  echo "$(ip netns exec "$N1" conntrack -L 2>/dev/null | grep -c 'dst=10.244.2.2')" \
    "$(ip netns exec "$N2" conntrack -L 2>/dev/null | grep -c 'src=10.244.1.2')"
}
if command -v conntrack >/dev/null; then
  [ "$(tracked today)" = "1 1" ] || { echo "today: the pods' flow is not in conntrack on both nodes" >&2; exit 1; }
  [ "$(tracked bypass)" = "0 0" ] || { echo "bypass: the pods' flow is still in conntrack" >&2; exit 1; }
  echo "checked: the pods' flow is tracked on both nodes with today's tables, on neither with the bypass" >&2
fi

CONFIGS="none nat today bypass kp kpnat"
SAMPLES=$WORKDIR/samples
: >"$SAMPLES"
for round in $(seq "$ROUNDS"); do
  for cfg in $CONFIGS; do
    load "$cfg"
    udp=$(ip netns exec "$P1A" taskset -c 0 sockperf tp -i 10.244.2.2 -p $UDP_PORT -m 64 -t 3 2>&1 |
      sed -n 's/.*Summary: Message Rate is \([0-9]*\).*/\1/p')
    # 11111: the TCP sockperf server that the reference's setup starts in the destination pod
    rtt=$(ip netns exec "$P1A" taskset -c 0 sockperf pp --tcp -i 10.244.2.2 -p 11111 -m 64 -t 3 2>&1 |
      sed -n 's/.*avg-latency=\([0-9.]*\).*/\1/p')
    [ -n "$udp" ] && [ -n "$rtt" ] || { echo "round $round $cfg: sockperf gave no figure" >&2; exit 1; }
    echo "$cfg $udp $rtt" >>"$SAMPLES"
    echo "round $round/$ROUNDS $cfg: $udp msg/s, RTT $(python3 -c "print(2*$rtt)") µs" >&2
  done
done

python3 - "$SAMPLES" "$MODE" "$ROUNDS" $CONFIGS <<'EOF'
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    cfg, udp, rtt = line.split()
    rows.setdefault(cfg, ([], []))
    rows[cfg][0].append(int(udp) / 1e3)
    rows[cfg][1].append(2 * float(rtt))
base_u, base_r = st.median(rows["none"][0]), st.median(rows["none"][1])
print(f"\n{sys.argv[2]}, {sys.argv[3]} rounds (medians; min-max)\n")
print("| tables | 64-byte UDP (sockperf tp) | ÷ none | TCP RTT (sockperf pp) | none ÷ this |")
print("|---|---|---|---|---|")
for cfg in sys.argv[4:]:
    u, r = rows[cfg]
    mu, mr = st.median(u), st.median(r)
    print(f"| {cfg} | {mu:.1f} kpps ({min(u):.1f}-{max(u):.1f}) | {mu / base_u:.2f} "
          f"| {mr:.2f} µs ({min(r):.2f}-{max(r):.2f}) | {base_r / mr:.2f} |")
EOF
