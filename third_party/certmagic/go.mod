module github.com/caddyserver/certmagic

go 1.26.0

require (
	github.com/caddyserver/zerossl v0.1.6
	github.com/klauspost/cpuid/v2 v2.4.0
	github.com/libdns/libdns v1.1.1
	github.com/mholt/acmez/v3 v3.1.7
	github.com/miekg/dns v1.1.73
	github.com/zeebo/blake3 v0.2.4
	go.uber.org/zap v1.28.0
	go.uber.org/zap/exp v0.3.0
	golang.org/x/crypto v0.57.0
	golang.org/x/net v0.59.0
	golang.org/x/sys v0.48.0
)

require (
	go.uber.org/multierr v1.11.0 // indirect
	golang.org/x/text v0.42.0 // indirect
)
