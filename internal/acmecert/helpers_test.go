package acmecert

import "github.com/icebox-voip/icebox/internal/syncbuf"

type syncBuffer = syncbuf.Buffer
