//! The program `memsem run` executes, prepared before the child exists: its arguments, its
//! environment and the paths to try (the PATH search of execvp), as C strings and pointer
//! arrays, so that the child only has to call execve.

use std::ffi::{CString, OsStr, OsString, c_char};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Where execvp looks when PATH is not set (glibc's `_CS_PATH`).
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// The shell that runs a file the kernel cannot execute (ENOEXEC), as execvp does.
const SHELL: &std::ffi::CStr = c"/bin/sh";

/// Everything execve needs, owned; the pointer arrays point into the strings.
pub struct Program {
    /// The paths to try in order: the program itself when it names a path, otherwise each
    /// PATH entry joined with it.
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// `/bin/sh`, a slot for the candidate, then the arguments: for ENOEXEC.
    shell_argv: Vec<*const c_char>,
}

impl Program {
    /// `program` with `args`, in this process's environment with `env` set on top.
    pub fn new(program: &OsStr, args: &[OsString], env: &[(&str, String)]) -> io::Result<Program> {
        let argv: Vec<CString> = std::iter::once(program)
            .chain(args.iter().map(OsString::as_os_str))
            .map(|arg| c_string(arg.as_bytes().to_vec()))
            .collect::<io::Result<_>>()?;
        let inherited = std::env::vars_os()
            .filter(|(name, _)| !env.iter().any(|(set, _)| OsStr::new(set) == name));
        let mut envp = Vec::new();
        for (name, value) in inherited {
            envp.push(c_string(pair(name.as_bytes(), value.as_bytes()))?);
        }
        for (name, value) in env {
            envp.push(c_string(pair(name.as_bytes(), value.as_bytes()))?);
        }
        let path = std::env::var_os("PATH").map(OsString::into_vec);
        let candidates = candidates(program.as_bytes(), path.as_deref())?;
        let argv_pointers = pointers(&argv);
        let shell_argv = [SHELL.as_ptr(), std::ptr::null()]
            .into_iter()
            .chain(argv_pointers.iter().skip(1).copied())
            .collect();
        Ok(Program {
            candidates,
            argv: argv_pointers,
            envp: pointers(&envp),
            shell_argv,
            _argv: argv,
            _envp: envp,
        })
    }

    /// Tries each candidate with execve as execvp does: the next one after ENOENT, EACCES
    /// and the like, the shell after ENOEXEC. Returns only on failure, with the errno to
    /// report (EACCES when a candidate was found but not executable). Allocates nothing and
    /// calls only execve: safe in a child that shares memory with its parent.
    pub fn exec(&mut self) -> i32 {
        let mut denied = false;
        let mut error = libc::ENOENT;
        for candidate in &self.candidates {
            // SAFETY: every pointer array is null-terminated and points into strings that
            // `self` owns.
            unsafe {
                libc::execve(candidate.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
            }
            match errno() {
                libc::ENOEXEC => {
                    if let Some(slot) = self.shell_argv.get_mut(1) {
                        *slot = candidate.as_ptr();
                    }
                    // SAFETY: as above; the slot now points at the candidate.
                    unsafe {
                        libc::execve(SHELL.as_ptr(), self.shell_argv.as_ptr(), self.envp.as_ptr());
                    }
                    return errno();
                }
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
                other => {
                    error = other;
                    break;
                }
            }
        }
        if denied && error == libc::ENOENT {
            libc::EACCES
        } else {
            error
        }
    }
}

/// The calling thread's errno.
fn errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

fn pair(name: &[u8], value: &[u8]) -> Vec<u8> {
    [name, b"=", value].concat()
}

/// Null-terminated pointers to `strings`.
fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|string| string.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The paths execvp would try for `program`: itself when it contains a slash, otherwise
/// each entry of `path` (an empty entry is the current directory) joined with it.
fn candidates(program: &[u8], path: Option<&[u8]>) -> io::Result<Vec<CString>> {
    if program.is_empty() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    if program.contains(&b'/') {
        return Ok(vec![c_string(program.to_vec())?]);
    }
    path.unwrap_or(DEFAULT_PATH)
        .split(|&byte| byte == b':')
        .map(|dir| match dir {
            b"" => c_string(program.to_vec()),
            dir => c_string([dir, b"/", program].concat()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(candidates: Vec<CString>) -> Vec<String> {
        candidates
            .into_iter()
            .map(|c| c.into_string().unwrap())
            .collect()
    }

    #[test]
    fn a_bare_name_is_looked_up_on_the_path_as_execvp_does() {
        let found = candidates(b"ls", Some(b"/usr/local/bin::/bin")).unwrap();
        assert_eq!(texts(found), ["/usr/local/bin/ls", "ls", "/bin/ls"]);
        let default = candidates(b"ls", None).unwrap();
        assert_eq!(texts(default), ["/bin/ls", "/usr/bin/ls"]);
    }

    #[test]
    fn a_name_with_a_slash_is_taken_as_it_is() {
        let found = candidates(b"./job.sh", Some(b"/bin")).unwrap();
        assert_eq!(texts(found), ["./job.sh"]);
        assert!(candidates(b"", Some(b"/bin")).is_err());
    }

    #[test]
    fn the_environment_is_inherited_with_the_lock_s_variables_on_top() {
        let program = Program::new(
            OsStr::new("true"),
            &[OsString::from("a b")],
            &[("MEMSEM_TOKEN", "t1".into())],
        )
        .unwrap();
        let strings = |pointers: &[*const c_char]| -> Vec<String> {
            pointers
                .iter()
                .take_while(|p| !p.is_null())
                // SAFETY: the pointers point into strings `program` owns.
                .map(|&p| {
                    unsafe { std::ffi::CStr::from_ptr(p) }
                        .to_string_lossy()
                        .into()
                })
                .collect()
        };
        assert_eq!(strings(&program.argv), ["true", "a b"]);
        let env = strings(&program.envp);
        assert_eq!(
            env.iter()
                .filter(|v| v.starts_with("MEMSEM_TOKEN="))
                .count(),
            1
        );
        assert!(env.contains(&"MEMSEM_TOKEN=t1".to_string()));
        assert_eq!(program.shell_argv.len(), 4);
        assert!(program.argv.last().unwrap().is_null());
        assert!(program.envp.last().unwrap().is_null());
    }

    #[test]
    fn a_nul_byte_is_refused() {
        let bad = Program::new(OsStr::new("tr\0ue"), &[], &[]);
        assert_eq!(bad.err().unwrap().kind(), io::ErrorKind::InvalidInput);
    }
}
