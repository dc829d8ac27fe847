module llmtap.test/go-client

go 1.19
