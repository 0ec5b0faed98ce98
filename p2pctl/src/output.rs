//! Standard output that a closed pipe ends quietly: `p2pctl releases | head -3` stops
//! printing when `head` has read its lines, as any Unix tool does, instead of panicking on
//! the broken pipe (Rust ignores SIGPIPE, so a plain `println!` would). Every command prints
//! through [`out!`](crate::out) and [`outln!`](crate::outln).

use std::io::{self, Write};

/// Writes `args` to standard output; on a closed pipe the process exits at once with
/// status 0 (nobody reads the rest), on any other error with status 1.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(crate::ExitCode::Ok.code());
        }
        eprintln!("p2pctl: error: writing to standard output: {e}");
        std::process::exit(crate::ExitCode::Failed.code());
    }
}

/// `print!` that ends quietly on a closed pipe.
#[macro_export]
#[doc(hidden)]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*)) };
}

/// `println!` that ends quietly on a closed pipe.
#[macro_export]
#[doc(hidden)]
macro_rules! outln {
    () => { $crate::output::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write(format_args!("{}\n", format_args!($($arg)*))) };
}
