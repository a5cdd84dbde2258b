// A Go program for the seal tests: Go makes its socket syscalls itself.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	switch os.Args[1] {
	case "serve": // serve ADDR: HTTP on ADDR, exits after one request
		done := make(chan struct{})
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s from go", r.RemoteAddr)
			go func() { time.Sleep(200 * time.Millisecond); close(done) }()
		})
		l, err := net.Listen("tcp", os.Args[2])
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(1)
		}
		fmt.Println("listening on", l.Addr())
		go http.Serve(l, nil)
		<-done
	case "get": // get URL
		var body []byte
		var err error
		for i := 0; i < 50; i++ {
			var r *http.Response
			r, err = http.Get(os.Args[2])
			if err == nil {
				body, err = io.ReadAll(r.Body)
				r.Body.Close()
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			fmt.Println("get:", err)
			os.Exit(1)
		}
		fmt.Printf("got %q\n", body)
	case "dial": // dial ADDR: one TCP connection attempt
		c, err := net.DialTimeout("tcp", os.Args[2], 3*time.Second)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		fmt.Println("dial: connected to", c.RemoteAddr(), "from", c.LocalAddr())
		c.Write([]byte("go-hello\n"))
		c.Close()
	case "udp": // udp: echo over UDP on loopback, both ways, unconnected and connected
		srv, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			fmt.Println("udp listen:", err)
			os.Exit(1)
		}
		go func() {
			buf := make([]byte, 100)
			for {
				n, a, err := srv.ReadFrom(buf)
				if err != nil {
					return
				}
				srv.WriteTo(append([]byte("echo "), buf[:n]...), a)
			}
		}()
		c, err := net.Dial("udp", srv.LocalAddr().String())
		if err != nil {
			fmt.Println("udp dial:", err)
			os.Exit(1)
		}
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil {
			fmt.Println("udp read:", err)
			os.Exit(1)
		}
		fmt.Printf("udp: %q\n", buf[:n])
	}
}
