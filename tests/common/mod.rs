pub mod tmp_dirs;
