// Package console is the edge's web console on the admin listener: pages
// rendered on the server with html/template and embed (no script, charts as
// SVG), sessions and client-certificate sign-in, CSRF tokens, the viewer and
// operator roles, and the index and aggregates of the audit log the pages
// read. It reads the trail through audit/ and writes its own records
// (console.login, console.login_failed, console.action) through the edge's
// audit writer, never to the file itself; it decides nothing itself: explain
// asks policytool's replay logic, actions are handed in (Console.AddAction).
package console
