package sdk_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"testing"

	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/testapp"
	"github.com/deepersensor/deepersensor/sdk"
)

// serverURL is the server the examples talk to: the whole service, started by TestMain on a fresh database
// with a fake model server that serves the model "tiny" and always answers
// ", there was a little girl named Lily. She".
var serverURL string

// The account the examples log in with; TestMain creates it.
const (
	email    = "ada@example.com"
	password = "correct horse battery staple"
)

func TestMain(m *testing.M) {
	app, stop, err := testapp.StartMain(testapp.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start the service:", err)
		os.Exit(1)
	}
	serverURL = app.URL
	code := 1
	if err := signup(email, password); err != nil {
		fmt.Fprintln(os.Stderr, "create the examples' account:", err)
	} else {
		code = m.Run()
	}
	stop()
	os.Exit(code)
}

func signup(email, password string) error {
	c, err := sdk.New(serverURL)
	if err != nil {
		return err
	}
	_, err = c.Signup(context.Background(), email, password)
	return err
}

func ExampleClient_Signup() {
	ctx := context.Background()
	c, err := sdk.New(serverURL, sdk.WithUserAgent("example/1.0"))
	if err != nil {
		log.Fatal(err)
	}
	newEmail := "grace-" + strings.ToLower(rand.Text()[:8]) + "@example.com"
	user, err := c.Signup(ctx, newEmail, "a long and secret passphrase")
	if err != nil {
		log.Fatal(err)
	}
	// Signing up does not log in.
	_, err = c.Me(ctx)
	fmt.Println("before login:", err != nil && sdk.IsUnauthorized(err))
	if err := c.Login(ctx, newEmail, "a long and secret passphrase"); err != nil {
		log.Fatal(err)
	}
	me, err := c.Me(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("logged in as the new account:", me.Id == user.Id)
	// Output:
	// before login: true
	// logged in as the new account: true
}

func ExampleClient_Login() {
	ctx := context.Background()
	c, err := sdk.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	err = c.Login(ctx, email, "not the password")
	fmt.Println(strings.SplitN(err.Error(), " (request", 2)[0])

	if err := c.Login(ctx, email, password); err != nil {
		log.Fatal(err)
	}
	me, err := c.Me(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("logged in as", me.Email)
	// Output:
	// 401 Unauthorized: invalid email or password
	// logged in as ada@example.com
}

func ExampleClient_Models() {
	ctx := context.Background()
	c, err := sdk.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Login(ctx, email, password); err != nil {
		log.Fatal(err)
	}
	models, err := c.Models(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range models {
		fmt.Println(m.Name, m.Family, m.ParameterSize)
	}
	// Output:
	// tiny:latest llama 293K
}

func ExampleClient_Chat() {
	ctx := context.Background()
	c, err := sdk.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Login(ctx, email, password); err != nil {
		log.Fatal(err)
	}
	res, err := c.Chat(ctx, client.ChatRequest{
		Model:    "tiny",
		Messages: []client.ChatMessageInput{{Role: client.RoleUser, Content: "Once upon a time"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Message.Content)
	fmt.Println(res.DoneReason, res.Usage.CompletionTokens)
	// Output:
	// , there was a little girl named Lily. She
	// stop 12
}

func ExampleClient_ChatStream() {
	ctx := context.Background()
	c, err := sdk.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Login(ctx, email, password); err != nil {
		log.Fatal(err)
	}
	req := client.ChatRequest{
		Model:    "tiny",
		Messages: []client.ChatMessageInput{{Role: client.RoleUser, Content: "Once upon a time"}},
	}
	for ev, err := range c.ChatStream(ctx, req) {
		if err != nil {
			log.Fatal(err)
		}
		switch ev := ev.(type) {
		case sdk.Meta:
			fmt.Println("model:", ev.Model)
		case sdk.Delta:
			fmt.Print(ev.Content) // print each piece as it arrives
		case sdk.Done:
			fmt.Printf("\n(%s, %d tokens)\n", ev.DoneReason, ev.Usage.CompletionTokens)
		}
	}
	// Output:
	// model: tiny
	// , there was a little girl named Lily. She
	// (stop, 12 tokens)
}

func ExampleClient_Conversations() {
	ctx := context.Background()
	c, err := sdk.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Login(ctx, email, password); err != nil {
		log.Fatal(err)
	}
	_, err = c.Chat(ctx, client.ChatRequest{
		Model:    "tiny",
		Messages: []client.ChatMessageInput{{Role: client.RoleUser, Content: "Why is the sky blue?"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	// The most recently active conversation comes first.
	page, err := c.Conversations(ctx, 1, "")
	if err != nil {
		log.Fatal(err)
	}
	conv := page.Items[0]
	fmt.Println(conv.Title)

	renamed, err := c.RenameConversation(ctx, conv.Id, "Sky colours")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(renamed.Title)

	detail, err := c.Conversation(ctx, conv.Id)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range detail.Messages {
		fmt.Printf("%s: %s\n", m.Role, m.Content)
	}

	if err := c.DeleteConversation(ctx, conv.Id); err != nil {
		log.Fatal(err)
	}
	_, err = c.Conversation(ctx, conv.Id)
	var apiErr *sdk.Error
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.Status, apiErr.Problem.Detail)
	}
	// Output:
	// Why is the sky blue?
	// Sky colours
	// user: Why is the sky blue?
	// assistant: , there was a little girl named Lily. She
	// 404 conversation not found
}
