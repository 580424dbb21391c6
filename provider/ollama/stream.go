package ollama

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"time"

	"github.com/deepersensor/deepersensor/provider"
)

const (
	// maxLineSize bounds one NDJSON line. A line holds one token, so this only stops a runaway server.
	maxLineSize = 8 << 20
	// drainTimeout bounds reading the end of a finished stream so that its connection can be reused.
	drainTimeout = time.Second
)

// ChatStream streams an answer from POST /api/chat with stream true, one NDJSON line per token. The request
// is sent when iteration starts, once one of MaxConcurrency slots is free; the slot is held until iteration
// ends. FirstChunkTimeout bounds the wait for the first line (model loading included) and ChunkTimeout each
// later silence; neither runs while the consumer handles a chunk. RequestTimeout bounds the whole stream, so
// that no answer runs for ever.
func (c *Client) ChatStream(ctx context.Context, req provider.ChatRequest) iter.Seq2[provider.Chunk, error] {
	return func(yield func(provider.Chunk, error) bool) {
		op := fmt.Sprintf("ollama chat %q", req.Model)
		body, err := json.Marshal(chatBody(req, true))
		if err != nil {
			yield(provider.Chunk{}, fmt.Errorf("%s: encode request: %w", op, err))
			return
		}
		release, err := c.acquire(ctx, op)
		if err != nil {
			yield(provider.Chunk{}, err)
			return
		}
		defer release()

		// Cancelling ctx (the consumer broke out, or a timer fired) aborts the request or body read at once.
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		timer := time.AfterFunc(c.cfg.FirstChunkTimeout, func() { cancel(errTimedOut) })
		defer timer.Stop()
		whole := time.AfterFunc(c.cfg.RequestTimeout, func() { cancel(errTimedOut) })
		defer whole.Stop()

		resp, err := c.do(ctx, http.MethodPost, "/api/chat", body)
		if err != nil {
			yield(provider.Chunk{}, sendError(ctx, op, err, c.streamTimedOut(0)))
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			yield(provider.Chunk{}, statusError(op, resp))
			return
		}

		lines := lineReader{br: bufio.NewReader(resp.Body)}
		var dec lineDecoder
		var line chatLine
		for chunks := 0; ; chunks++ {
			b, err := lines.next()
			if err != nil {
				yield(provider.Chunk{}, c.readError(ctx, op, err, chunks))
				return
			}
			timer.Stop()
			if err := dec.decode(b, &line); err != nil {
				yield(provider.Chunk{}, provider.UpstreamFailed(fmt.Errorf("%s: malformed chunk: %w", op, err)))
				return
			}
			if line.Error != "" {
				yield(provider.Chunk{}, provider.UpstreamFailed(fmt.Errorf("%s: error in the stream: %s", op, line.Error)))
				return
			}
			if line.Done {
				final := provider.Chunk{Content: line.Message.Content, Done: true, DoneReason: line.DoneReason, Usage: line.usage()}
				if yield(final, nil) {
					timer.Reset(drainTimeout)
					_, _ = io.Copy(io.Discard, io.LimitReader(lines.br, 64<<10))
				}
				return
			}
			if !yield(provider.Chunk{Content: line.Message.Content}, nil) {
				return
			}
			timer.Reset(c.cfg.ChunkTimeout)
		}
	}
}

// readError classifies a failure to read the next line after chunks lines were read.
func (c *Client) readError(ctx context.Context, op string, err error, chunks int) error {
	if err := ctxError(ctx, op, c.streamTimedOut(chunks)); err != nil {
		return err
	}
	if errors.Is(err, io.EOF) {
		return provider.UpstreamFailed(fmt.Errorf("%s: stream ended before its final chunk", op))
	}
	return provider.UpstreamFailed(fmt.Errorf("%s: stream broken: %w", op, err))
}

// streamTimedOut says, for the logs, which timeout of a stream ran out after chunks lines were read.
func (c *Client) streamTimedOut(chunks int) string {
	if chunks == 0 {
		return "no answer within " + c.cfg.FirstChunkTimeout.String()
	}
	return "no chunk for " + c.cfg.ChunkTimeout.String()
}

// lineReader splits a body into lines without copying them, except lines longer than its buffer.
type lineReader struct {
	br   *bufio.Reader
	long []byte // reused for lines that do not fit in br's buffer
}

var errLineTooLong = fmt.Errorf("line longer than %d bytes", maxLineSize)

// next returns the next line without its "\n" or "\r\n". The line is valid until the next call. A last
// line without "\n" is returned before io.EOF.
func (r *lineReader) next() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		r.long = append(r.long[:0], line...)
		for err == bufio.ErrBufferFull {
			if len(r.long) > maxLineSize {
				return nil, errLineTooLong
			}
			line, err = r.br.ReadSlice('\n')
			r.long = append(r.long, line...)
		}
		line = r.long
	}
	if err != nil && (err != io.EOF || len(line) == 0) {
		return nil, err
	}
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
		if n > 1 && line[n-2] == '\r' {
			line = line[:n-2]
		}
	}
	return line, nil
}
