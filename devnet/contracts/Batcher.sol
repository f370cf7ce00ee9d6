// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title Batcher
/// @notice The devnet's batching contract for settlements: several calls in one
///         transaction, each allowed to fail on its own. Its ABI is the canonical
///         Multicall3's `aggregate3` (same selector, same structs, same revert string
///         for a required call that fails), so the settler speaks to it exactly as
///         it speaks to Multicall3 on public chains.
/// @dev The devnet launcher copies this contract's *runtime* code to Multicall3's
///      canonical address with `anvil_setCode`: no constructor, no storage, no
///      immutables.
contract Batcher {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    /// @notice Call each `calls[i].target` with `calls[i].callData`, in order. A call
    ///         that reverts with `allowFailure` set is reported in its `Result`;
    ///         without it, the whole transaction reverts with
    ///         "Multicall3: call failed".
    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData) {
        uint256 length = calls.length;
        returnData = new Result[](length);
        for (uint256 i = 0; i < length; ++i) {
            Call3 calldata c = calls[i];
            (bool success, bytes memory ret) = c.target.call(c.callData);
            require(success || c.allowFailure, "Multicall3: call failed");
            returnData[i] = Result(success, ret);
        }
    }
}
