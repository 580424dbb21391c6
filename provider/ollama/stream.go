package ollama

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"iter"

	"github.com/deepersensor/deepersensor/provider"
)

// maxLineSize bounds one NDJSON line. A line holds one token, so this only stops a runaway server.
const maxLineSize = 8 << 20

// ChatStream streams an answer from POST /api/chat with stream true, one NDJSON line per token. The request
// is sent when iteration starts, once one of MaxConcurrency slots is free; the slot is held until iteration
// ends. FirstChunkTimeout bounds the wait for the first line (model loading included) and ChunkTimeout each
// later silence; neither runs while the consumer handles a chunk. RequestTimeout bounds the whole stream, so
// that no answer runs for ever. The final chunk's Model is the model asked for, as Ollama echoes it.
func (c *Client) ChatStream(ctx context.Context, req provider.ChatRequest) iter.Seq2[provider.Chunk, error] {
	return func(yield func(provider.Chunk, error) bool) {
		op := fmt.Sprintf("ollama chat %q", req.Model)
		s, err := c.up.OpenStream(ctx, op, "/api/chat", chatBody(req, true))
		if err != nil {
			yield(provider.Chunk{}, err)
			return
		}
		defer s.Close()

		lines := lineReader{br: bufio.NewReader(s.Body)}
		var dec lineDecoder
		var line chatLine
		for {
			b, err := lines.next()
			if err != nil {
				yield(provider.Chunk{}, s.ReadError(err, "stream ended before its final chunk"))
				return
			}
			s.Received()
			if err := dec.decode(b, &line); err != nil {
				yield(provider.Chunk{}, provider.UpstreamFailed(fmt.Errorf("%s: malformed chunk: %w", op, err)))
				return
			}
			if line.Error != "" {
				yield(provider.Chunk{}, provider.UpstreamFailed(fmt.Errorf("%s: error in the stream: %s", op, line.Error)))
				return
			}
			if line.Done {
				final := provider.Chunk{Model: req.Model, Content: line.Message.Content, Done: true, DoneReason: line.DoneReason, Usage: line.usage()}
				if yield(final, nil) {
					s.Finish()
				}
				return
			}
			if !yield(provider.Chunk{Content: line.Message.Content}, nil) {
				return
			}
			s.Next()
		}
	}
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
