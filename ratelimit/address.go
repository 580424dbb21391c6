package ratelimit

import "net/netip"

// AddressKey returns the key under which a per-address limit counts the
// client at ip. An IPv4 address (also one mapped into IPv6) is its own key.
// An IPv6 address is keyed by its network of ipv6Prefix bits, such as
// "2001:db8:1:2::/64": a single subscriber is usually given a whole /64 and
// can pick a new address in it for every request. A string that is not an
// address is returned as it is.
func AddressKey(ip string, ipv6Prefix int) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap()
	if addr.Is4() {
		return addr.String()
	}
	prefix, err := addr.WithZone("").Prefix(ipv6Prefix)
	if err != nil {
		return addr.String()
	}
	return prefix.String()
}
