// The JavaScript toolchain's proof: the smallest component it can build.
export const probe = {
    answer() {
        return 42;
    },
};
