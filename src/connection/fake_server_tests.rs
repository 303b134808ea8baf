//! What the Rust tests' fake servers share: reading the commands a client
//! sends.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;

/// One RESP command (an array of bulk strings): its name and arguments, or
/// `None` once the client hangs up or sends something else.
pub fn read_command(reader: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let n: usize = line.trim_start_matches('*').trim().parse().ok()?;
    let mut args = Vec::new();
    for _ in 0..n {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let len: usize = line.trim_start_matches('$').trim().parse().ok()?;
        let mut buf = vec![0; len + 2];
        reader.read_exact(&mut buf).ok()?;
        args.push(String::from_utf8_lossy(&buf[..len]).into_owned());
    }
    Some(args)
}

/// `read_command`'s command name alone.
pub fn read_command_name(reader: &mut BufReader<TcpStream>) -> Option<String> {
    read_command(reader)?.into_iter().next()
}
