"""`parallelsync demo` and the throwaway servers it (and the test suite) runs on."""
